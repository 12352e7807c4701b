"""Task kinds: what a task's examples, model, losses and metrics are. One module per kind behind
the small `TaskKind` protocol, registered in the one literal dict `KINDS`; the stages dispatch on
the kind recorded in a task's config instead of assuming a classifier.

- ``classify``: text -> one of N labels; a sequence classifier with a per-task head; cross-entropy,
  hidden-state MSE distillation; accuracy / macro F1 (`calora.train.kind_classify`).
- ``generate``: prompt -> response; a causal LM whose LM head stays part of the shared backbone;
  response-only cross-entropy, KL distillation on the next-token distribution; exact match or
  perplexity, plus greedy agreement with the teacher (`calora.train.kind_generate`).
"""

from __future__ import annotations

import enum
import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn


class KindName(str, enum.Enum):
    CLASSIFY = "classify"
    GENERATE = "generate"


class Objective(Protocol):
    """The losses the training loop minimises: task loss + distill_alpha * distillation loss."""

    def needs_hidden(self, calora) -> bool:
        """Whether the student's hidden states are needed (hidden-state distillation)."""
        ...

    def task_loss(self, out: Any, batch: dict) -> "torch.Tensor":
        ...

    def distill_loss(self, out: Any, t_hidden: "torch.Tensor", t_logits: "torch.Tensor", batch: dict,
                     calora) -> "torch.Tensor":
        ...


class TaskKind(Protocol):
    name: ClassVar[KindName]
    peft_task_type: ClassVar[str]  # what peft's LoraConfig.task_type says for this kind
    columns: ClassVar[list]  # (header, split, metric key, shown as %) of the results tables
    objective: Objective

    def load_task(self, cfg) -> Any:
        """The task's data with its deterministic splits (offline default or the user's --data)."""
        ...

    def load_recorded(self, name: str, task_record: dict) -> Any:
        """The task exactly as training read it, from its recorded `task` block."""
        ...

    def encode(self, cfg, task, tokenizer) -> dict:
        """split name -> tokenized dataset (`.collator()` gives its batching)."""
        ...

    def load_model(self, source: str, task_record: dict, seed: int, tokenizer) -> "nn.Module":
        """The uncompressed float32 model for this kind (a new task head is initialised from `seed`)."""
        ...

    def evaluate(self, model: "nn.Module", ctx, name: str, splits: tuple[str, ...]) -> dict:
        """split -> metrics (every figure calora-train reports)."""
        ...

    def summary(self, rows: list[tuple[str, dict]]) -> str:
        """The table calora-train prints: (model name, metrics) rows."""
        ...


#: The one registry of task kinds: import paths, so nothing heavy is imported to list them.
KINDS: dict[str, str] = {
    KindName.CLASSIFY.value: "calora.train.kind_classify:Classify",
    KindName.GENERATE.value: "calora.train.kind_generate:Generate",
}


def get_kind(name: str | KindName) -> TaskKind:
    value = name.value if isinstance(name, KindName) else name
    if value not in KINDS:
        raise ConfigError(f"task kind {value!r} is unknown (choices: {', '.join(KINDS)})")
    module, _, cls = KINDS[value].partition(":")
    return getattr(importlib.import_module(module), cls)()


def kind_of(config: dict) -> KindName:
    """The kind a task directory's calora_config.json records (classification before kinds existed)."""
    try:
        return KindName(config.get("task", {}).get("kind", KindName.CLASSIFY.value))
    except ValueError:
        raise ConfigError(f"calora_config.json: task kind {config['task']['kind']!r} is unknown "
                          f"(choices: {', '.join(KINDS)})") from None
