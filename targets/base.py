"""The small interface every export target implements, and the values passed across it.

A target gets an `ExportJob` (the trained task models, all on one compressed backbone) and a
directory to write into; it returns a `TargetResult` describing what it wrote, how the runtime is
fed, how far the stored weights are from the trained ones, and a smoke comparison of the artifact,
run in its own runtime, against PyTorch. The bundle (manifest, tokenizer, README) is the export
stage's job, not the target's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from torch import nn

if TYPE_CHECKING:
    import numpy as np


class Mode(str, enum.Enum):
    BAKED = "baked"  # one artifact per task, LoRA + recovery + head in the graph
    SWAPPABLE = "swappable"  # one shared backbone artifact + a small adapter file per task
    # One shared backbone weights file + a small program per task holding its graph and adapter
    # (ExecuTorch program-data separation): each task runs at baked speed (generative ones in the
    # runtime's own LLM runner); a switch loads that task's program against the same weights file.
    SHARED = "shared"


class AdapterDType(str, enum.Enum):
    """How a swappable bundle's adapter files store the task tensors (LoRA, recovery, head); the
    codec is `calora.targets.adapter_codec`. The artifacts compute in float32 whatever the files
    store: the shared backbone (or the app, ExecuTorch) widens the tensors once per task or run.
    float16 halves every adapter file; rounding the trained float32 values to it moves the logits
    by far less than the int8 activations do. int8 stores the LoRA and recovery matrices as int8
    codes with one scale per rank component (the head float16): about a quarter of the float32
    bytes. The export measures what the rounding costs in PyTorch, and calora-validate compares
    the artifact with the float32 trained model either way."""

    FLOAT16 = "float16"
    FLOAT32 = "float32"
    INT8 = "int8"

    @classmethod
    def allowed_in(cls, mode: Mode) -> tuple["AdapterDType", ...]:
        """The dtypes a bundle of `mode` can store its adapters in: any in swappable files; float32
        or int8 in shared programs (XNNPACK runs float32 or int8 linears; a float16 constant would
        be widened back to float32 when the program is built); none to choose baked."""
        return {Mode.SWAPPABLE: tuple(cls), Mode.SHARED: (cls.FLOAT32, cls.INT8)}.get(mode, ())

    @classmethod
    def check(cls, mode: Mode, requested: "AdapterDType | str | None") -> None:
        """One clear error, before any model is loaded, for an --adapter-dtype `mode` cannot store."""
        from calora.train.errors import ConfigError

        if requested is None or cls(requested) in cls.allowed_in(mode):
            return
        allowed = cls.allowed_in(mode)
        if not allowed:
            raise ConfigError(f"--adapter-dtype {cls(requested).value}: {mode.value} programs keep the trained float32 "
                              "tensors in the graph. Drop the flag, or pass --mode swappable (adapter files) or --mode "
                              "shared (ExecuTorch task programs, float32 or int8)")
        raise ConfigError(f"--adapter-dtype {cls(requested).value}: {mode.value} programs store the adapter as "
                          f"{' or '.join(d.value for d in allowed)}")

    @classmethod
    def default_for(cls, spec: Any) -> "AdapterDType":
        """float16, except over a backbone trained for per-tensor int8 activations (`act:tensor`):
        there one int8 step spans a whole example's range, and float16 rounding of the adapter
        flips enough activation codes to fail parity (MiniLM rotten_tomatoes on ONNX Runtime: max
        logit error 0.347 and 26.1 dB with float16 against 0.162 and 37.0 dB with float32)."""
        return cls.FLOAT32 if spec.per_tensor_activations else cls.FLOAT16


class Activations(str, enum.Enum):
    """How the runtime computes the backbone linears' activations, where a target can choose
    (`--activations`): only ONNX Runtime's int4 MatMulNBits can (generative and classification
    bundles). float32 is its default (accuracy_level unset); int8 is accuracy_level 4, as
    onnxruntime-genai's builder emits: MLAS rounds each block of inputs to int8 and multiplies in
    integers. ExecuTorch always runs int8 (XNNPACK 8da kernels), Core ML always float32. The manifest
    records the result as `runtime.activations` ("float32" / "int8-dynamic"), which picks
    validation's reference and gates."""

    FLOAT32 = "float32"
    INT8 = "int8"

    @staticmethod
    def check(target: str, requested: "Activations | str | None") -> None:
        """One clear error, before any model is loaded, for --activations on a target that cannot choose."""
        from calora.train.errors import ConfigError

        if requested is not None and target != "onnx":
            fixed = {"executorch": "int8 (XNNPACK's 8-bit dynamic activations)", "coreml": "float32"}.get(target, "fixed")
            raise ConfigError(f"--activations {Activations(requested).value}: --target {target} always runs the "
                              f"backbone's activations as {fixed}; only --target onnx (generative tasks, int4 backbone) "
                              "can choose. Drop the flag")


class Attention(str, enum.Enum):
    """How a classification graph computes self-attention (`--attention`; ONNX and ExecuTorch).
    fused (default): ONNX, one com.microsoft MultiHeadAttention node per layer (ONNX Runtime's CPU
    kernel; models with grouped-query attention keep their own); ExecuTorch, attention and norms
    written as XNNPACK operators (batched matmuls, the additive padding mask built once), so XNNPACK
    runs the encoder in few delegate calls. ops: the model's graph as exported
    (ONNX: MatMul, Softmax, Transpose...; ExecuTorch: SDPA and norms as portable kernels), for
    comparison or for a consumer without those operators. Generative graphs always use the runtime's
    own attention (GroupQueryAttention, llama::custom_sdpa): ops is refused for them."""

    FUSED = "fused"
    OPS = "ops"

    @staticmethod
    def check(target: str, requested: "Attention | str | None") -> None:
        """One clear error, before any model is loaded, for --attention on a target without the choice."""
        from calora.train.errors import ConfigError

        if requested is not None and target not in ("onnx", "executorch"):
            raise ConfigError(f"--attention {Attention(requested).value}: only --target onnx and --target executorch "
                              f"can choose how attention is written, not --target {target}. Drop the flag")


def keep_worst(into: dict[str, float], errors: dict[str, float]) -> None:
    """Merge `errors` into `into`, keeping each key's largest value: a bundle reports the worst weight
    or rounding error over its tasks."""
    for k, v in errors.items():
        into[k] = max(into.get(k, 0.0), v)


def refuse_per_tensor_activations(spec: Any, target: str, runs_as: str) -> None:
    """A backbone trained for per-tensor int8 activations (`act:tensor`, ONNX Runtime's scheme) on a
    target that computes activations otherwise would not run what the adapters were trained
    against: one clear error before any lowering, naming the flag and what to do instead."""
    from calora.train.errors import ConfigError

    if spec.per_tensor_activations:
        raise ConfigError(f"--compression {spec}: 'act:tensor' trains for ONNX Runtime's per-tensor int8 "
                          f"activations; {target} {runs_as}. Export this run with --target onnx, or train again "
                          f"without 'act:tensor' for --target {target}")


@dataclasses.dataclass(frozen=True)
class TaskModel:
    """One trained task: the compressed backbone with its LoRA, recovery and head (eval, CPU)."""

    name: str
    label_names: tuple[str, ...]
    model: nn.Module
    config: dict  # the task's calora_config.json
    task_dir: Path
    kind: str = "classify"  # calora.train.kinds.KindName value


@dataclasses.dataclass(frozen=True)
class ExportJob:
    tasks: tuple[TaskModel, ...]
    mode: Mode
    spec: Any  # calora.train.spec.CompressionSpec
    fingerprint: str  # of the compressed backbone every task was trained on
    max_length: int
    tokenizer: Any
    smoke_texts: tuple[str, ...]  # real texts from the tasks' test splits
    kind: str = "classify"  # every task of a bundle has the same kind
    #: generative jobs: formatted prompts (token ids) of the tasks' test splits for the smoke run
    smoke_prompts: tuple[tuple[int, ...], ...] = ()
    #: generative jobs: what an app needs to generate (chat template, special ids, max context, sampling)
    generation: dict | None = None
    #: swappable mode: the dtype of the adapter files; shared mode: of the adapter in each task's
    #: program (baked artifacts keep the trained float32 values)
    adapter_dtype: AdapterDType = AdapterDType.FLOAT16
    #: `--activations` where the target can choose (ONNX generative int4); None: the target's own
    activations: Activations | None = None
    #: `--attention` (ONNX classification); None: fused
    attention: Attention | None = None

    @property
    def deployed_adapter_dtype(self) -> AdapterDType:
        """What the task tensors are stored as: `adapter_dtype` in swappable and shared mode, float32 baked."""
        return self.adapter_dtype if self.mode in (Mode.SWAPPABLE, Mode.SHARED) else AdapterDType.FLOAT32


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "int64", "float32", ...
    shape: tuple[int | str, ...]  # symbolic dims as names: ("batch", "sequence")

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclasses.dataclass(frozen=True)
class ArtifactFile:
    path: str  # relative to the bundle root
    role: str  # "model" (baked or shared, one task), "backbone" (swappable or shared: the shared file),
    #            "adapter" (swappable, one task)
    task: str | None
    bytes: int
    sha256: str

    @classmethod
    def of(cls, root: Path, path: Path, role: str, task: str | None) -> "ArtifactFile":
        data = path.read_bytes() if path.is_file() else _dir_bytes(path)
        return cls(str(path.relative_to(root)), role, task, len(data), hashlib.sha256(data).hexdigest())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _dir_bytes(path: Path) -> bytes:
    """A directory artifact (an .mlpackage) hashed as the concatenation of its files, in order."""
    out = bytearray()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        out += str(f.relative_to(path)).encode() + b"\0" + f.read_bytes()
    return bytes(out)


@dataclasses.dataclass
class TargetResult:
    files: list[ArtifactFile]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    runtime: dict[str, str]  # {"name": ..., "version": ...}
    weight_error: dict[str, float]  # max |stored - trained| backbone weight; 0.0 = bit-identical
    smoke: dict[str, dict]  # task -> {"runtime", "examples", "max_abs_logit_error", "argmax_agreement"}
    task_switch: str  # what switching tasks costs on this runtime, for the bundle README
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return {"files": [f.to_dict() for f in self.files], "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs], "runtime": self.runtime,
                "weight_error": self.weight_error, "smoke": self.smoke, "task_switch": self.task_switch,
                "notes": self.notes}


class Stage(str, enum.Enum):
    """Validation stages, in the fixed order the validator runs and reports them."""

    FILES = "files"  # every file the manifest lists is present and has its recorded sha256
    NAMES = "names"  # input/output/task/label names, backbone fingerprints
    SHAPES = "shapes"  # input/output/adapter tensor shapes
    STRUCTURE = "structure"  # delegation, adapters kept out of the shared backbone
    TOKENIZATION = "tokenization"  # bundle tokenizer == training tokenizer (Python and C++)
    VALUES = "values"  # logits against the compressed PyTorch model
    METRIC = "metric"  # task metric against the compressed PyTorch model

    @property
    def order(self) -> int:
        return list(Stage).index(self)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One structural fact a target reports about its own artifact. `ok=None` means the check could
    not run here; `detail` then says why (it is reported as skipped, never as passed)."""

    stage: Stage
    name: str
    ok: bool | None
    detail: str
    task: str | None = None


class ArtifactRunner(Protocol):
    """A bundle's artifacts opened in the target's own runtime."""

    runtime: str  # what actually ran, for every report row ("ExecuTorch 1.5.1 runtime, XNNPACK")

    def findings(self) -> list[Finding]:
        """Names, shapes and structure of the artifacts as the runtime sees them."""
        ...

    def logits(self, task: str, input_ids: "np.ndarray", attention_mask: "np.ndarray") -> "np.ndarray":
        """[N, num_labels] float32 logits of `task` for N rows padded to the bundle's max length,
        fed exactly as an app would (adapter files loaded from the bundle in swappable mode)."""
        ...


class Target(Protocol):
    """One export target. Heavy SDKs are imported inside methods, never at module import."""

    name: ClassVar[str]
    modes: ClassVar[frozenset[Mode]]

    def export(self, job: ExportJob, out_dir: Path) -> TargetResult:
        """Write the artifacts for `job` under `out_dir` (a fresh temporary directory)."""
        ...

    def open(self, bundle: Path, manifest: dict) -> ArtifactRunner:
        """Open an exported bundle in this target's runtime (for `calora-validate`)."""
        ...


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """One line on stderr when a long export step starts and one when it ends, with its time:
    lowering a 30-layer decoder takes minutes per program and must not look like a hang."""
    t0 = time.perf_counter()
    print(f"[calora] {what} ...", file=sys.stderr, flush=True)
    yield
    print(f"[calora] {what}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def manifest_file(bundle: Path, manifest: dict, role: str, task: str | None, suffix: str) -> Path:
    """The bundle file the manifest lists with `role` for `task` (None: the shared backbone's files)
    whose path ends with `suffix`."""
    entries = manifest["backbone"]["files"] if task is None else \
        next(t for t in manifest["tasks"] if t["name"] == task)["files"]
    for f in entries:
        if f["role"] == role and f["path"].endswith(suffix):
            return Path(bundle) / f["path"]
    raise FileNotFoundError(f"manifest lists no {role} {suffix} file for {task or 'the backbone'}")


def fingerprint_version(fingerprint: str) -> int:
    """A 28-bit integer derived from a backbone fingerprint, for adapter formats that can only
    carry an integer model version (ONNX Runtime's .onnx_adapter)."""
    return int(fingerprint.split(":")[-1][:7], 16)
