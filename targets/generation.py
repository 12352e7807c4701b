"""What a generative artifact's runner returns, shared by every target's runtime module."""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import numpy as np

#: called with each new token id as it is produced (streaming)
OnToken = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class Generation:
    """Greedy tokens (EOS excluded) and how long the runtime took: the prompt's prefill, and each
    one-token decode step."""

    tokens: list[int]
    prefill_s: float
    prompt_tokens: int
    decode_s: list[float]

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        total = sum(self.decode_s)
        return len(self.decode_s) / total if total > 0 else float("nan")


class GenerativeRunner(Protocol):
    """A generative bundle's artifacts opened in the target's own runtime. `adapter` is the task
    (swappable: its adapter file is loaded as an app loads it; baked: the task's own model)."""

    runtime: str

    def generate(self, task: str, prompt: list[int], max_new_tokens: int, eos: int,
                 on_token: OnToken | None = None) -> Generation:
        """Greedy decoding in the runtime: prefill the prompt, then one token per step."""
        ...

    def forward_logits(self, task: str, ids: list[int]) -> np.ndarray:
        """[len(ids), vocab] logits of one prefill over the whole sequence (teacher forcing)."""
        ...

    def cached_logits(self, task: str, ids: list[int], prompt_len: int) -> np.ndarray:
        """[len(ids) - prompt_len + 1, vocab]: logits at positions prompt_len-1 .. len(ids)-1, from a
        prefill of ids[:prompt_len] and then one decode step per further token, through the KV cache."""
        ...

    def bare_logits(self, ids: list[int]) -> np.ndarray | None:
        """Swappable bundles: logits of the backbone with an all-zero adapter; None for baked."""
        ...

    def findings(self) -> list:
        ...


#: the smoke's default reference
TRAINED = "trained PyTorch model"
#: the reference of a runtime computing with float activations
FLOAT_ACTIVATIONS = "trained weights, float activations"


def smoke(generate: Callable[[list[int], int, int], Generation], task, job, runtime: str,
          limit: int | None = None, reference=None, reference_label: str = TRAINED) -> dict:
    """An export's smoke comparison: greedy generations of the artifact (`generate(prompt,
    max_new_tokens, eos)`) against `reference` (default: the trained PyTorch model, as the
    runtime computes where it runs the trained int8 activations; a float-activation runtime passes
    the float reference validation uses, else one early flipped token makes every later one
    differ) on the job's test prompts. An artifact that cannot run is reported as skipped with
    the reason, never as passed."""
    from calora.train.kind_generate import agreement, greedy

    special = job.generation["special_tokens"]
    eos = int(special["eos"])
    pad = eos if special.get("pad") is None else int(special["pad"])
    prompts = [list(p) for p in job.smoke_prompts[:limit]]
    n = job.generation["max_new_tokens"]
    try:
        got = [generate(p, n, eos).tokens for p in prompts]
    except Exception as exc:  # noqa: BLE001 - reported, never claimed as a pass
        return {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
    agree = agreement(got, greedy(task.model if reference is None else reference, prompts, n, eos, pad, show=False))
    return {"runtime": runtime, "reference": reference_label, "examples": len(prompts),
            "identical_generations": agree["identical"], "token_agreement": agree["token_agreement"]}
