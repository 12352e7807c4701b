"""Frozen, validated configs for a training run. Errors name the field and the value."""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from .adapters import Activation
from .errors import ConfigError
from .spec import CompressionSpec


class TeacherOutputs(str, enum.Enum):
    ONLINE = "online"  # teacher forward every step (works with dropout, any number of processes)
    CACHE = "cache"  # one teacher pass over the training set, kept in memory


class TeacherPrecision(str, enum.Enum):
    """What the teacher's forward pass computes in. The teacher only supplies distillation targets:
    bfloat16 moves its final hidden states by 0.7-1.4% (relative; MiniLM, SmolLM2), far less than
    the compressed student differs from them, and runs the pass 1.9-2.5x faster on CPUs with
    native bfloat16 (AMX, AVX512-BF16) and on GPUs. Its own evaluation always runs in float32."""

    TRAINING = "training"  # whatever --mixed-precision trains in (float32 when "no")
    BF16 = "bf16"


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
        raise ConfigError(f"{flag(obj, field)}: unknown value {value!r} (choices: {choices})") from None


def flag(obj, field: str) -> str:
    """The CLI flag of a config field (its `flag` metadata), for error messages."""
    for f in dataclasses.fields(obj):
        if f.name == field:
            return f.metadata.get("flag", field)
    return field


def _arg(default, name: str, **kw):
    return dataclasses.field(default=default, metadata={"flag": name}, **kw)


def _number(obj, field: str, *, low: float, high: float = math.inf, low_open: bool = True,
            integer: bool = False) -> None:
    """A finite number in (low, high] (or [low, high] when not `low_open`); NaN and inf refused."""
    v = getattr(obj, field)
    name = flag(obj, field)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise ConfigError(f"{name} must be {'an integer' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    if (v <= low if low_open else v < low) or v > high:
        lo = f"> {low:g}" if low_open else f">= {low:g}"
        raise ConfigError(f"{name} must be {lo}" + (f" and <= {high:g}" if high != math.inf else "") + f", got {v!r}")


def _positive(obj, *fields: str) -> None:
    for f in fields:
        _number(obj, f, low=0, integer=isinstance(getattr(obj, f), int) and not isinstance(getattr(obj, f), bool))


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """LoRA of a freshly trained teacher (an imported PEFT directory brings its own)."""

    rank: int = _arg(8, "--lora-rank")
    alpha: float = _arg(16.0, "--lora-alpha")
    dropout: float = _arg(0.0, "--lora-dropout")
    targets: tuple[str, ...] | None = _arg(None, "--lora-targets")  # None: the family's attention query/value

    def __post_init__(self) -> None:
        _number(self, "rank", low=0, high=4096, integer=True)
        _positive(self, "alpha")
        _number(self, "dropout", low=0, high=0.999, low_open=False)
        if self.targets is not None:
            object.__setattr__(self, "targets", tuple(self.targets))
            if not self.targets:
                raise ConfigError("--lora-targets: empty list")


@dataclasses.dataclass(frozen=True)
class CALoRASettings:
    """The three parts of CA-LoRA, each switchable for ablations."""

    inherit: bool = True
    recover: bool = True
    distill: bool = True
    # Baseline, not CA-LoRA: a fresh LoRA initialised LoftQ-style from the compression residual.
    loftq: bool = False
    recovery_rank: int = _arg(8, "--recovery-rank")
    recovery_activation: Activation = _arg(Activation.GELU, "--recovery-activation")
    recovery_targets: tuple[str, ...] | None = _arg(None, "--recovery-targets")  # None: every compressed linear
    distill_alpha: float = _arg(1.0, "--distill-alpha")
    distill_logits: bool = False
    teacher_outputs: TeacherOutputs = _arg(TeacherOutputs.ONLINE, "--teacher-outputs")
    teacher_precision: TeacherPrecision = _arg(TeacherPrecision.TRAINING, "--teacher-precision")
    kl_temperature: float = _arg(1.0, "--kl-temperature")  # generate: KL on next-token distributions at T
    distill_hidden: bool = False  # generate: also the hidden-state MSE (classify always uses it)

    def __post_init__(self) -> None:
        _enum(self, "recovery_activation", Activation)
        _enum(self, "teacher_outputs", TeacherOutputs)
        _enum(self, "teacher_precision", TeacherPrecision)
        _number(self, "recovery_rank", low=0, high=4096, integer=True)
        _number(self, "distill_alpha", low=0, high=1e6, low_open=False)
        _number(self, "kl_temperature", low=0, high=100)
        if self.recovery_targets is not None:
            object.__setattr__(self, "recovery_targets", tuple(self.recovery_targets))
        if self.loftq and self.inherit:
            raise ConfigError("--loftq initialises a fresh LoRA from the compression residual; it cannot also inherit "
                              "the teacher's LoRA: add --no-inherit")

    @property
    def label(self) -> str:
        on = [n for n in ("inherit", "recover", "distill", "loftq") if getattr(self, n)]
        return "+".join(on) if on else "lora-from-scratch"


#: No offline backbone has more positions; the backbone's own limit is checked when it is loaded.
MAX_LENGTH = 8192


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    epochs: float = _arg(1.0, "--epochs")
    batch_size: int = _arg(32, "--batch-size")
    lr: float = _arg(1e-3, "--lr")
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = _arg(64, "--max-length")  # also checked against the backbone's positions
    eval_batch_size: int = 128
    seed: int = _arg(0, "--seed")
    max_train_examples: int | None = _arg(None, "--max-train-examples")  # for smoke runs; None = whole split
    max_eval_examples: int | None = _arg(None, "--max-eval-examples")
    mixed_precision: MixedPrecision = _arg(MixedPrecision.NO, "--mixed-precision")
    checkpoint_every: int = _arg(100, "--checkpoint-every")  # optimizer steps; 0 = only at the end

    def __post_init__(self) -> None:
        _enum(self, "mixed_precision", MixedPrecision)
        _number(self, "epochs", low=0, high=10_000)
        _number(self, "batch_size", low=0, high=65_536, integer=True)
        _number(self, "lr", low=0, high=10)
        _number(self, "max_length", low=1, high=MAX_LENGTH, integer=True)
        _number(self, "eval_batch_size", low=0, integer=True)
        _number(self, "weight_decay", low=0, high=10, low_open=False)
        _number(self, "warmup_ratio", low=0, high=1, low_open=False)
        _number(self, "seed", low=0, high=2**32 - 1, low_open=False, integer=True)
        for f in ("max_train_examples", "max_eval_examples"):
            if getattr(self, f) is not None:
                _number(self, f, low=0, integer=True)
        _number(self, "checkpoint_every", low=0, low_open=False, integer=True)


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """Generative tasks: response length in training, and how greedy evaluation decodes."""

    max_response_tokens: int = _arg(32, "--max-response-tokens")  # longer responses are cut (EOS kept)
    max_new_tokens: int = _arg(32, "--max-new-tokens")  # greedy decoding in evaluation
    eval_generate_examples: int = _arg(64, "--eval-generate-examples")  # per split: greedy is the slow part
    eval_batch_size: int = 16  # teacher-forced NLL: logits are [batch x tokens x vocab]

    def __post_init__(self) -> None:
        for f in ("max_response_tokens", "max_new_tokens", "eval_generate_examples", "eval_batch_size"):
            _number(self, f, low=0, high=MAX_LENGTH, integer=True)


#: CPU-sized defaults per task kind for the flags a user did not set (SmolLM2-135M takes seconds
#: per step on 2 cores: 40 steps of 8 examples of at most 96 tokens, evaluated on 200 examples).
KIND_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "classify": {},
    "generate": {"batch_size": 8, "max_length": 96, "max_train_examples": 320, "max_eval_examples": 200},
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one `calora-train` invocation needs."""

    backbone: str = "minilm"
    task: str = "rotten_tomatoes"
    data: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    prompt_column: str = "prompt"  # generate: the user's file's prompt and response columns
    response_column: str = "response"
    kind: str = "classify"  # a KindName value; the CLI infers it from --task / --prompt-column
    compression: CompressionSpec = dataclasses.field(default_factory=CompressionSpec)
    teacher: str | None = None  # an existing PEFT LoRA directory; None = train one
    labels: tuple[str, ...] | None = None  # class order (head output i = labels[i]); None = sorted names
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    calora: CALoRASettings = dataclasses.field(default_factory=CALoRASettings)
    train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    generation: GenerationSettings = dataclasses.field(default_factory=GenerationSettings)
    out: str = "calora_runs"
    overwrite: bool = False  # replace OUT/TASK/calora if calora trained it before
    restart: bool = False  # discard a checkpoint left by an earlier run instead of resuming

    def __post_init__(self) -> None:
        if not self.task or "/" in self.task or "\\" in self.task or self.task.startswith(".") or \
                any(c in self.task for c in "\0\n\r\t") or len(self.task) > 128:
            raise ConfigError(f"--task must be a plain name (letters, digits, -, _), got {self.task!r}")
        if not isinstance(self.compression, CompressionSpec):
            raise ConfigError(f"compression must be a CompressionSpec, got {type(self.compression).__name__}")
        for name, value in (("--text-column", self.text_column), ("--label-column", self.label_column),
                            ("--out", self.out), ("--backbone", self.backbone)):
            if not str(value).strip():
                raise ConfigError(f"{name}: empty value")
        from .kinds import KINDS

        if self.kind not in KINDS:
            raise ConfigError(f"--kind {self.kind!r} is unknown (choices: {', '.join(KINDS)})")
        if self.kind == "generate" and self.calora.teacher_outputs == TeacherOutputs.CACHE:
            raise ConfigError("--teacher-outputs cache: a generative teacher's [tokens x vocab] logits do not fit a "
                              "cache; generate tasks use the online teacher")
        if self.kind == "generate" and self.compression.per_tensor_activations:
            # A decoder runs its prompt as one tensor and then one token per step, so a per-tensor
            # scale is per-prompt in prefill and per-token in decode: no one simulation matches it.
            raise ConfigError("--compression ...+act:tensor: per-tensor activations are for classification on "
                              "ONNX Runtime; generative tasks train with the default per-token activations")
        if self.kind == "generate" and self.labels:
            raise ConfigError("--labels: generative tasks have no label set")
        if self.text_column == self.label_column:
            raise ConfigError(f"--text-column and --label-column name the same column {self.text_column!r}")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(x.strip() for x in self.labels))
            if len(self.labels) < 2 or not all(self.labels):
                raise ConfigError(f"--labels: name at least two non-empty labels, got {','.join(self.labels)!r}")

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
        out = plain(self)
        for transient in ("overwrite", "restart"):  # how to write, not what is trained
            out.pop(transient)
        return out
