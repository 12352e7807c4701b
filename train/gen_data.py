"""Prompt formatting, tokenized prompt -> response examples, and the response-only loss mask.

The prompt is formatted with the backbone's chat template when its tokenizer has one (a single
user turn, then the assistant's generation prompt), else as ``prompt + "\\n"``; the format is
recorded in the task's config because an app must format prompts the same way. The response is
followed by the tokenizer's EOS token. Labels are -100 on every prompt position, so the loss and
the distillation see response tokens only.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import Dataset

from .errors import BackboneError
from .gen_tasks import GenSplit

IGNORE = -100


@dataclasses.dataclass(frozen=True)
class PromptFormat:
    """How a user's prompt becomes the model's input text."""

    chat_template: str | None  # the tokenizer's Jinja template, or None for the plain format

    @classmethod
    def of(cls, tokenizer) -> "PromptFormat":
        return cls(getattr(tokenizer, "chat_template", None) or None)

    def text(self, tokenizer, prompt: str) -> str:
        if self.chat_template:
            return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
        return prompt + "\n"

    def to_dict(self) -> dict:
        return {"kind": "chat_template" if self.chat_template else "plain",
                "chat_template": self.chat_template,
                "rule": "one user turn + the assistant generation prompt" if self.chat_template else "prompt + '\\n'"}


def eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise BackboneError("the backbone's tokenizer has no EOS token: a generated response could never end")
    return int(tokenizer.eos_token_id)


def prompt_ids(tokenizer, fmt: PromptFormat, prompt: str, budget: int) -> list[int]:
    """Token ids of the formatted prompt, at most `budget` long: the user's text is shortened (from
    its end) until the formatted whole fits, so the template's markup is never cut."""
    text = prompt
    for _ in range(8):
        ids = tokenizer(fmt.text(tokenizer, text), add_special_tokens=not fmt.chat_template)["input_ids"]
        if len(ids) <= budget:
            return ids
        content = tokenizer(text, add_special_tokens=False)["input_ids"]
        keep = max(1, len(content) - (len(ids) - budget) - 1)
        text = tokenizer.decode(content[:keep], skip_special_tokens=True)
    return ids[-budget:]


class GenEncoded(Dataset):
    """A tokenized generative split: input ids (prompt + response + EOS) and labels (-100 on the
    prompt). Items carry their index so per-example teacher outputs can be looked up."""

    def __init__(self, split: GenSplit, tokenizer, fmt: PromptFormat, max_length: int, max_response: int,
                 limit: int | None = None) -> None:
        prompts = list(split.prompts[:limit] if limit else split.prompts)
        responses = list(split.responses[:limit] if limit else split.responses)
        eos = eos_id(tokenizer)
        self.input_ids, self.labels, self.prompt_ids, self.responses = [], [], [], responses
        for prompt, response in zip(prompts, responses):
            r = tokenizer(response, add_special_tokens=False)["input_ids"][:max_response] + [eos]
            p = prompt_ids(tokenizer, fmt, prompt, max(1, max_length - len(r)))
            self.prompt_ids.append(p)
            self.input_ids.append(p + r)
            self.labels.append([IGNORE] * len(p) + r)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    def __len__(self) -> int:
        return len(self.input_ids)

    def collator(self) -> "GenCollator":
        return GenCollator(self.pad_id)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "label_ids": self.labels[i], "index": i}


class GenCollator:
    """Right-pads input ids (pad id) and labels (-100) to the longest row."""

    def __init__(self, pad_id: int, pad_to: int | None = None) -> None:
        self.pad_id, self.pad_to = pad_id, pad_to

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n] = torch.tensor(it["input_ids"])
            labels[row, :n] = torch.tensor(it["label_ids"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "index": torch.tensor([it["index"] for it in items], dtype=torch.long)}
