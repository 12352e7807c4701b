"""Frozen, validated configs for a training run. Errors name the field and the value."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from .adapters import Activation
from .errors import ConfigError
from .spec import CompressionSpec


class TeacherOutputs(str, enum.Enum):
    ONLINE = "online"  # teacher forward every step (works with dropout, any number of processes)
    CACHE = "cache"  # one teacher pass over the training set, kept in memory


class MixedPrecision(str, enum.Enum):
    NO = "no"
    FP16 = "fp16"
    BF16 = "bf16"


def _enum(obj, field: str, enum_type: type[enum.Enum]) -> None:
    value = getattr(obj, field)
    if isinstance(value, enum_type):
        return
    try:
        object.__setattr__(obj, field, enum_type(value))
    except ValueError:
        choices = ", ".join(e.value for e in enum_type)
        raise ConfigError(f"{field}: unknown value {value!r} (choices: {choices})") from None


def _positive(obj, *fields: str) -> None:
    for f in fields:
        v = getattr(obj, f)
        if not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"{f} must be > 0, got {v!r}")


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """LoRA of a freshly trained teacher (an imported PEFT directory brings its own)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] | None = None  # None: the backbone family's attention query/value

    def __post_init__(self) -> None:
        _positive(self, "rank", "alpha")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora dropout must be in [0, 1), got {self.dropout!r}")
        if self.targets is not None:
            object.__setattr__(self, "targets", tuple(self.targets))
            if not self.targets:
                raise ConfigError("lora targets: empty list")


@dataclasses.dataclass(frozen=True)
class CALoRASettings:
    """The three parts of CA-LoRA, each switchable for ablations."""

    inherit: bool = True
    recover: bool = True
    distill: bool = True
    recovery_rank: int = 8
    recovery_activation: Activation = Activation.GELU
    recovery_targets: tuple[str, ...] | None = None  # None: every compressed linear layer
    distill_alpha: float = 1.0
    distill_logits: bool = False
    teacher_outputs: TeacherOutputs = TeacherOutputs.ONLINE

    def __post_init__(self) -> None:
        _enum(self, "recovery_activation", Activation)
        _enum(self, "teacher_outputs", TeacherOutputs)
        _positive(self, "recovery_rank")
        if self.distill_alpha < 0:
            raise ConfigError(f"distill_alpha must be >= 0, got {self.distill_alpha!r}")
        if self.recovery_targets is not None:
            object.__setattr__(self, "recovery_targets", tuple(self.recovery_targets))

    @property
    def label(self) -> str:
        on = [n for n in ("inherit", "recover", "distill") if getattr(self, n)]
        return "+".join(on) if on else "lora-from-scratch"


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 64
    eval_batch_size: int = 128
    seed: int = 0
    max_train_examples: int | None = None  # for smoke runs; None = the whole split
    max_eval_examples: int | None = None
    mixed_precision: MixedPrecision = MixedPrecision.NO
    checkpoint_every: int = 100  # optimizer steps; 0 = only at the end of each epoch

    def __post_init__(self) -> None:
        _enum(self, "mixed_precision", MixedPrecision)
        _positive(self, "epochs", "batch_size", "lr", "max_length", "eval_batch_size")
        for f in ("max_train_examples", "max_eval_examples"):
            v = getattr(self, f)
            if v is not None and v <= 0:
                raise ConfigError(f"{f} must be > 0, got {v!r}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every!r}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one `calora-train` invocation needs."""

    backbone: str = "minilm"
    task: str = "rotten_tomatoes"
    data: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    compression: CompressionSpec = dataclasses.field(default_factory=CompressionSpec)
    teacher: str | None = None  # an existing PEFT LoRA directory; None = train one
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    calora: CALoRASettings = dataclasses.field(default_factory=CALoRASettings)
    train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    out: str = "calora_runs"

    def __post_init__(self) -> None:
        if not self.task or "/" in self.task or self.task.startswith("."):
            raise ConfigError(f"--task must be a plain name, got {self.task!r}")
        if not isinstance(self.compression, CompressionSpec):
            raise ConfigError(f"compression must be a CompressionSpec, got {type(self.compression).__name__}")

    def to_dict(self) -> dict[str, Any]:
        def plain(v):
            if isinstance(v, enum.Enum):
                return v.value
            if isinstance(v, CompressionSpec):
                return v.to_dict()
            if dataclasses.is_dataclass(v):
                return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
            if isinstance(v, tuple):
                return list(v)
            return v
        return plain(self)
