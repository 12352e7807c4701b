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
