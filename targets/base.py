"""The small interface every export target implements, and the values passed across it.

A target gets an `ExportJob` (the trained task models, all on one compressed backbone) and a
directory to write into; it returns a `TargetResult` describing what it wrote, how the runtime is
fed, how far the stored weights are from the trained ones, and a smoke comparison of the artifact,
run in its own runtime, against PyTorch. The bundle (manifest, tokenizer, README) is the export
stage's job, not the target's.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from pathlib import Path
from typing import Any, ClassVar, Protocol

from torch import nn


class Mode(str, enum.Enum):
    BAKED = "baked"  # one artifact per task, LoRA + recovery + head in the graph
    SWAPPABLE = "swappable"  # one shared backbone artifact + a small adapter file per task


@dataclasses.dataclass(frozen=True)
class TaskModel:
    """One trained task: the compressed backbone with its LoRA, recovery and head (eval, CPU)."""

    name: str
    label_names: tuple[str, ...]
    model: nn.Module
    config: dict  # the task's calora_config.json
    task_dir: Path


@dataclasses.dataclass(frozen=True)
class ExportJob:
    tasks: tuple[TaskModel, ...]
    mode: Mode
    spec: Any  # calora.train.spec.CompressionSpec
    fingerprint: str  # of the compressed backbone every task was trained on
    max_length: int
    tokenizer: Any
    smoke_texts: tuple[str, ...]  # real texts from the tasks' test splits


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
    role: str  # "model" (baked, one task), "backbone" (swappable, shared), "adapter" (swappable, one task)
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


class Target(Protocol):
    """One export target. Heavy SDKs are imported inside `export`, never at module import."""

    name: ClassVar[str]
    modes: ClassVar[frozenset[Mode]]

    def export(self, job: ExportJob, out_dir: Path) -> TargetResult:
        """Write the artifacts for `job` under `out_dir` (a fresh temporary directory)."""
        ...
