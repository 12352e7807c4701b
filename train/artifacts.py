"""The task directory a training run leaves, and how later stages load it back exactly.

    <out>/<task>/teacher/            PEFT LoRA dir of the uncompressed teacher (+ metrics.json)
    <out>/<task>/calora/lora/        PEFT LoRA dir: CA-LoRA's LoRA + task head (peft loads it alone)
    <out>/<task>/calora/recovery.safetensors   the recovery branches, keyed by layer
    <out>/<task>/calora/calora_config.json     backbone, compression spec, fingerprint, ranks, targets
    <out>/<task>/calora/metrics.json

Loading checks that every recorded recovery layer has its tensors and that no tensor is left
over, so nothing is silently dropped (peft's custom-module path does drop them, FACTS.md).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapters import Activation, recovery_state, wrap
from .backbones import load_classifier, load_tokenizer
from .compress import compress_model, fingerprint
from .errors import AdapterMismatchError, ArtifactError
from .peft_io import attach_lora, read_lora_dir, write_lora_dir
from .spec import CompressionSpec

SCHEMA_VERSION = 1
CONFIG_FILE = "calora_config.json"
RECOVERY_FILE = "recovery.safetensors"
METRICS_FILE = "metrics.json"


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise ArtifactError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc.msg})") from None


class AtomicDir:
    """Build a directory under a temporary name and rename it into place on success."""

    def __init__(self, final: Path) -> None:
        self.final = Path(final)

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".{self.final.name}-"))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)


def save_student(model: nn.Module, lora_config, out_dir: Path, config: dict, metrics: dict) -> None:
    """Write a CA-LoRA task directory atomically."""
    from safetensors.torch import save_file

    with AtomicDir(out_dir) as tmp:
        write_lora_dir(model, lora_config, tmp / "lora")
        rec = {k: v.detach().cpu().contiguous() for k, v in recovery_state(model).items()}
        save_file(rec, str(tmp / RECOVERY_FILE), metadata={"format": "pt"})
        write_json(tmp / CONFIG_FILE, config)
        write_json(tmp / METRICS_FILE, metrics)


def attach_recovery(model: nn.Module, layers: list[str], rank: int, activation: Activation,
                    tensors: dict[str, torch.Tensor] | None = None) -> None:
    for name in layers:
        wrap(model, name).add_recovery(rank, activation)
    if tensors is None:
        return
    expected = recovery_state(model)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise AdapterMismatchError(f"recovery weights do not match the recorded layers: missing {missing[:3]}, "
                                   f"unexpected {extra[:3]}")
    for key, param in expected.items():
        if tuple(param.shape) != tuple(tensors[key].shape):
            raise AdapterMismatchError(f"layer {key}: recovery shape {tuple(tensors[key].shape)} does not fit "
                                       f"{tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(tensors[key])


def load_student(task_dir: str | Path, backbone: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the compressed backbone from its recorded source and spec, check its fingerprint,
    and attach the saved LoRA, head and recovery. Returns (model in eval mode, config)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    task_dir = Path(task_dir)
    if (task_dir / "calora").is_dir():
        task_dir = task_dir / "calora"
    cfg = read_json(task_dir / CONFIG_FILE)
    if cfg.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"{task_dir / CONFIG_FILE}: schema_version {cfg.get('schema_version')!r}, "
                            f"this calora reads {SCHEMA_VERSION}")
    source = backbone or cfg["backbone"]["source"]
    tokenizer = load_tokenizer(source)
    model = load_classifier(source, len(cfg["task"]["label_names"]), seed=0, pad_token_id=tokenizer.pad_token_id)
    spec = CompressionSpec.from_dict(cfg["compression"]["spec"])
    compress_model(model, spec)
    got = fingerprint(model)
    if got != cfg["compression"]["fingerprint"]:
        raise AdapterMismatchError(
            f"{task_dir}: adapter was trained on backbone {cfg['compression']['fingerprint'][:23]}…, but "
            f"{source!r} compressed with {spec} gives {got[:23]}…")
    adapter = read_lora_dir(task_dir / "lora")
    attach_lora(model, adapter.config, adapter.tensors)
    rec = cfg.get("recovery")
    if rec:
        path = task_dir / RECOVERY_FILE
        if not path.is_file():
            raise ArtifactError(f"{path} not found")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(f"{path} is corrupt: {exc}") from None
        attach_recovery(model, rec["layers"], rec["rank"], Activation(rec["activation"]), tensors)
    model.eval()
    return model, cfg
