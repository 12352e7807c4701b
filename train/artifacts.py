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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapters import Activation, recovery_state, wrap
from .backbones import load_tokenizer
from .compress import compress_model, fingerprint
from .errors import AdapterMismatchError, ArtifactError
from .kinds import get_kind, kind_of
from .outputs import AtomicDir, OutputKind
from .peft_io import attach_lora, read_lora_dir, write_lora_dir
from .spec import CompressionSpec

SCHEMA_VERSION = 1
CONFIG_FILE = "calora_config.json"
RECOVERY_FILE = "recovery.safetensors"
METRICS_FILE = "metrics.json"
#: Files of a task directory whose sha256 calora_config.json records.
TRACKED_FILES = ("lora/adapter_config.json", "lora/adapter_model.safetensors", RECOVERY_FILE)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_task_files(task_dir: Path, cfg: dict) -> None:
    """Every file whose sha256 the task's config recorded is present and unchanged (task
    directories written before checksums were recorded are accepted as they are)."""
    recorded = cfg.get("files_sha256") or {}
    if not isinstance(recorded, dict):
        raise ArtifactError(f"{task_dir / CONFIG_FILE}: files_sha256 must be an object")
    for name, digest in recorded.items():
        path = Path(task_dir) / str(name)
        if not path.is_file():
            raise ArtifactError(f"{path} not found (listed in {CONFIG_FILE})")
        if _sha256(path) != digest:
            raise ArtifactError(f"{path} is corrupt or changed since training (sha256 differs from {CONFIG_FILE}): "
                                "retrain the task or restore the file")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file renamed over `path`; removed if the write fails)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> dict:
    """A JSON object from `path`; a missing, unreadable, non-UTF-8 or non-object file is an ArtifactError."""
    if not path.is_file():
        raise ArtifactError(f"{path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({getattr(exc, 'msg', None) or exc.reason})") from None
    except OSError as exc:
        raise ArtifactError(f"{path} cannot be read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def save_student(model: nn.Module, lora_config, out_dir: Path, config: dict, metrics: dict) -> None:
    """Write a CA-LoRA task directory atomically."""
    from safetensors.torch import save_file

    with AtomicDir(out_dir, OutputKind.MODEL, "--out") as tmp:
        write_lora_dir(model, lora_config, tmp / "lora")
        rec = {k: v.detach().cpu().contiguous() for k, v in recovery_state(model).items()}
        save_file(rec, str(tmp / RECOVERY_FILE), metadata={"format": "pt"})
        # Checked by load_student: a changed or damaged weight file is refused, never loaded.
        config = config | {"files_sha256": {name: _sha256(tmp / name) for name in TRACKED_FILES}}
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


def _check_config(path: Path, cfg: dict) -> None:
    """The keys load_student and the later stages read, with their types."""
    shape = {"backbone": {"source": str}, "task": {"label_names": list, "max_length": int, "record": dict},
             "compression": {"spec": dict, "fingerprint": str}}
    for section, fields in shape.items():
        value = cfg.get(section)
        if not isinstance(value, dict):
            raise ArtifactError(f"{path}: {section} is missing or not an object")
        for key, typ in fields.items():
            if not isinstance(value.get(key), typ) or isinstance(value.get(key), bool):
                raise ArtifactError(f"{path}: {section}.{key} is missing or not a {typ.__name__}")
    rec = cfg.get("recovery")
    if rec is not None and not (isinstance(rec, dict) and isinstance(rec.get("layers"), list)
                                and isinstance(rec.get("rank"), int) and isinstance(rec.get("activation"), str)):
        raise ArtifactError(f"{path}: recovery must be null or an object with layers, rank and activation")


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
    _check_config(task_dir / CONFIG_FILE, cfg)
    check_task_files(task_dir, cfg)
    source = backbone or cfg["backbone"]["source"]
    tokenizer = load_tokenizer(source)
    model = get_kind(kind_of(cfg)).load_model(source, cfg["task"], 0, tokenizer)
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
        try:
            activation = Activation(rec["activation"])
        except ValueError:
            raise ArtifactError(f"{task_dir / CONFIG_FILE}: recovery.activation {rec['activation']!r} is unknown") from None
        attach_recovery(model, rec["layers"], rec["rank"], activation, tensors)
    model.eval()
    return model, cfg
