"""The ``generate`` task kind: prompt -> response with a causal LM (KV-cached greedy decoding).

Losses: cross-entropy on response tokens only; distillation (CA-LoRA's third part) is the KL
divergence from the teacher's next-token distribution to the student's at every response position,
at temperature T (scaled by T^2), computed online from the teacher each step: caching the teacher's
[tokens x vocab] logits does not scale (49k x tokens per example for SmolLM2), so `--teacher-outputs
cache` is refused for this kind. Hidden-state MSE can be added (`--distill-hidden`).

Metrics: teacher-forced NLL per response token and its perplexity on every evaluated example;
greedy generations (the `generate` reference) for exact match against the reference response
(short answers) and token agreement with the teacher's greedy generations.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .gen_data import IGNORE, GenCollator, GenEncoded, PromptFormat, eos_id
from .kinds import KindName


def response_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask over logits[:, :-1], targets): position t predicts token t+1, scored where it is a
    response token."""
    targets = labels[:, 1:]
    return targets != IGNORE, targets


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of KL(teacher || student) at temperature T, times T^2 (Hinton et al.)."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    return kl.mean() * temperature ** 2 if kl.numel() else student_logits.sum() * 0.0


class GenerateObjective:
    def needs_hidden(self, calora) -> bool:
        return bool(calora is not None and calora.distill_hidden)

    def task_loss(self, out, batch) -> torch.Tensor:
        mask, targets = response_positions(batch["labels"])
        return F.cross_entropy(out.logits[:, :-1][mask].float(), targets[mask])

    def distill_loss(self, out, t_hidden, t_logits, batch, calora) -> torch.Tensor:
        mask, _ = response_positions(batch["labels"])
        loss = kl_divergence(out.logits[:, :-1][mask], t_logits[:, :-1][mask], calora.kl_temperature)
        if calora.distill_hidden:
            from .trainer import masked_mse

            loss = loss + masked_mse(out.hidden_states[-1], t_hidden, batch["attention_mask"])
        return loss


@torch.no_grad()
def greedy(model, prompts: list[list[int]], max_new_tokens: int, eos: int, pad: int, batch_size: int = 16,
           desc: str = "generate", show: bool = True) -> list[list[int]]:
    """Greedy continuations (token ids, EOS excluded) of each prompt, with the model's KV cache;
    the reference the exported artifacts are compared with. Prompts are left-padded in batches."""
    device = next(model.parameters()).device
    model.eval()
    out: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not show, leave=False):
        rows = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]):] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=eos, pad_token_id=pad)
        for r, i in enumerate(rows):
            tokens = gen[r, width:].tolist()
            out[i] = tokens[:tokens.index(eos)] if eos in tokens else tokens
    return out


def normalise(text: str) -> str:
    return re.sub(r"[\s.!?,;:'\"]+$", "", text.strip().lower())


def agreement(a: list[list[int]], b: list[list[int]]) -> dict[str, float]:
    """Token-by-token agreement of greedy generations `a` with `b`: share of identical generations,
    share of matching positions (over the longer of each pair), mean first divergence position."""
    same, match, total, first = 0, 0, 0, []
    for x, y in zip(a, b):
        same += x == y
        n = max(len(x), len(y), 1)
        match += sum(1 for i in range(min(len(x), len(y))) if x[i] == y[i])
        total += n
        k = next((i for i in range(min(len(x), len(y))) if x[i] != y[i]), min(len(x), len(y)))
        first.append(k if x != y else len(x))
    n = max(len(a), 1)
    return {"identical": same / n, "token_agreement": match / max(total, 1),
            "mean_first_divergence": sum(first) / n, "examples": len(a)}


class Generate:
    name: ClassVar[KindName] = KindName.GENERATE
    peft_task_type: ClassVar[str] = "CAUSAL_LM"
    #: (header, split, metric key, shown as %) of the results tables
    columns: ClassVar[list] = [("val exact match (%)", "validation", "exact_match", True),
                               ("test exact match (%)", "test", "exact_match", True),
                               ("test perplexity", "test", "perplexity", False),
                               ("test greedy token agreement with teacher (%)", "test",
                                "agreement_with_teacher.token_agreement", True)]
    objective = GenerateObjective()

    def load_task(self, cfg):
        from .gen_tasks import load_gen_task

        return load_gen_task(cfg.task, cfg.data, cfg.prompt_column, cfg.response_column)

    def load_recorded(self, name: str, task_record: dict):
        from .gen_tasks import load_recorded_gen

        return load_recorded_gen(name, task_record["record"])

    def encode(self, cfg, task, tokenizer) -> dict:
        t, g = cfg.train, cfg.generation
        fmt = PromptFormat.of(tokenizer)
        return {split: GenEncoded(task.splits[split], tokenizer, fmt, t.max_length, g.max_response_tokens,
                                  t.max_train_examples if split == "train" else t.max_eval_examples)
                for split in ("train", "validation", "test")}

    def load_model(self, source: str, task_record: dict, seed: int, tokenizer):
        from .backbones import load_causal_lm

        torch.manual_seed(seed)
        model = load_causal_lm(source)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model

    # ---- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def nll(self, model, dataset: GenEncoded, batch_size: int, desc: str) -> tuple[float, int]:
        device = next(model.parameters()).device
        model.eval()
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=GenCollator(dataset.pad_id))
        total, count = 0.0, 0
        for batch in tqdm(loader, desc=desc, leave=False):
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
            mask, targets = response_positions(batch["labels"].to(device))
            total += float(F.cross_entropy(logits[:, :-1][mask].float(), targets[mask], reduction="sum"))
            count += int(mask.sum())
        return total / max(count, 1), count

    def generations(self, model, ctx, split: str, desc: str) -> list[list[int]]:
        g, data = ctx.cfg.generation, ctx.sets[split]
        prompts = data.prompt_ids[:g.eval_generate_examples]
        return greedy(model, prompts, g.max_new_tokens, eos_id(ctx.tokenizer), data.pad_id, desc=desc)

    def evaluate(self, model, ctx, name: str, splits=("validation", "test")) -> dict:
        out = {}
        cache = ctx.cache.setdefault("teacher_generations", {})
        for split in splits:
            nll, tokens = self.nll(model, ctx.sets[split], ctx.cfg.generation.eval_batch_size, f"{name}/{split} nll")
            gens = self.generations(model, ctx, split, f"{name}/{split} generate")
            refs = ctx.sets[split].responses[:len(gens)]
            texts = [ctx.tokenizer.decode(g, skip_special_tokens=True) for g in gens]
            m = {"nll": nll, "perplexity": math.exp(min(nll, 50.0)), "response_tokens": tokens,
                 "exact_match": sum(normalise(t) == normalise(r) for t, r in zip(texts, refs)) / max(len(refs), 1),
                 "generated_examples": len(gens), "examples": len(ctx.sets[split]),
                 "sample": [{"response": r, "generated": t} for r, t in list(zip(refs, texts))[:3]]}
            if name == "teacher":
                cache[split] = gens
            else:
                if split not in cache:  # a reused or imported teacher: its generations, once
                    cache[split] = self.generations(ctx.teacher, ctx, split, f"teacher/{split} generate")
                m["agreement_with_teacher"] = agreement(gens, cache[split])
            out[split] = m
        return out

    def summary(self, rows: list[tuple[str, dict]]) -> str:
        lines = [f"{'model':<42} {'val EM':>7} {'test EM':>8} {'test ppl':>9} {'agree':>6}"]
        for name, m in rows:
            agree = m["test"].get("agreement_with_teacher", {}).get("token_agreement")
            lines.append(f"{name:<42} {m['validation']['exact_match']:>7.4f} {m['test']['exact_match']:>8.4f} "
                         f"{m['test']['perplexity']:>9.3f} {'' if agree is None else f'{agree:.3f}':>6}")
        return "\n".join(lines)
