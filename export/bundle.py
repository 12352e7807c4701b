"""Assemble the bundle an app embeds: target artifacts, tokenizer, manifest.json, README.md.

The bundle is built in a temporary sibling directory and renamed into place only when everything
succeeded, so an interrupted or failed export leaves no half bundle (an existing bundle at the
same path is replaced only then).
"""

from __future__ import annotations

import hashlib
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

from calora.targets import get_target
from calora.targets.base import AdapterDType, ExportJob, TargetResult, keep_worst, step
from calora.train.artifacts import write_json
from calora.train.errors import ConfigError
from calora.train.outputs import AtomicDir, OutputKind

from .graph import adapter_tensors
from .manifest import MANIFEST_FILE, MANIFEST_SCHEMA_VERSION, check_manifest
from .readme import bundle_readme

_VERSIONED = ("calora", "torch", "transformers", "peft", "executorch", "torchao", "onnx", "onnxruntime",
              "coremltools", "tokenizers")


def adapter_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def versions(dists: tuple[str, ...] = _VERSIONED) -> dict[str, str]:
    """Installed versions of `dists` (and Python), "not installed" where absent."""
    out = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def build_manifest(job: ExportJob, target: str, result: TargetResult, command: str, seconds: float) -> dict:
    tasks = []
    dtype = job.deployed_adapter_dtype
    for t in job.tasks:
        tensors = adapter_tensors(t.model, dtype)  # as the artifact stores them (int8: with scales)
        files = [f.to_dict() for f in result.files if f.task == t.name]
        tasks.append({
            "name": t.name, "label_names": list(t.label_names), "num_labels": len(t.label_names),
            "adapter_fingerprint": adapter_fingerprint(tensors),
            "adapter_parameters": int(sum(v.numel() for v in adapter_tensors(t.model).values())),
            "backbone_fingerprint": t.config["compression"]["fingerprint"],
            "trained_metrics": _trained_metrics(t.task_dir), "task_dir": str(t.task_dir), "files": files,
            "smoke": result.smoke.get(t.name),
        })
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "target": target, "mode": job.mode.value, "kind": job.kind, "runtime": result.runtime, "versions": versions(),
        "adapter_dtype": dtype.value,
        "backbone": {"source": job.tasks[0].config["backbone"]["source"],
                     "family": job.tasks[0].config["backbone"]["family"], "fingerprint": job.fingerprint,
                     "compression": {"spec": job.spec.to_dict(), "text": str(job.spec)},
                     "files": [f.to_dict() for f in result.files if f.task is None]},
        "tasks": tasks,
        "inputs": [s.to_dict() for s in result.inputs], "outputs": [s.to_dict() for s in result.outputs],
        "max_sequence_length": job.max_length,
        **({"generation": job.generation} if job.generation else {}),
        "tokenizer": {"dir": "tokenizer", "files": []},  # filled in once the tokenizer is written
        "weight_error": result.weight_error, "task_switch": result.task_switch, "notes": result.notes,
        "validation": {"smoke": {t: s for t, s in result.smoke.items()},
                       "full_parity": "not run: `calora-validate BUNDLE` checks parity on the task data"},
        "command": command,
        "export_seconds": round(seconds, 1),
        "nondeterministic_fields": {"export_seconds": "wall time of this export; differs run to run",
                                    "tasks[].task_dir": "where the trained task directory was on the exporting machine",
                                    "versions": "the installed packages of the exporting machine",
                                    "command": "the command line as typed",
                                    "files[*.ort].sha256": "ONNX Runtime's .ort serializer writes different bytes "
                                    "for the same .onnx on each conversion; the .onnx is byte-reproducible"},
    }


def adapter_rounding(job: ExportJob) -> dict[str, float]:
    """The cost of storing the adapters in the bundle's adapter dtype, measured in PyTorch on the
    smoke rows before any runtime is involved (max over tasks); {} for float32."""
    from calora.export.graph import adapter_rounding_error, example_inputs

    dtype = job.deployed_adapter_dtype
    if dtype == AdapterDType.FLOAT32:
        return {}
    if job.kind == "generate":
        rows = [(torch.tensor([p]), torch.ones(1, len(p), dtype=torch.long)) for p in job.smoke_prompts[:4]]
    else:
        rows = [example_inputs(job.tokenizer, list(job.smoke_texts), job.max_length)]
    out: dict[str, float] = {}
    for t in job.tasks:  # one deployable copy per task, every row through it
        keep_worst(out, adapter_rounding_error(t.model, dtype, rows))
    return out


def _trained_metrics(task_dir: Path) -> dict | None:
    import json

    path = Path(task_dir) / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    return {"teacher_test": m["teacher"]["test"], "student_test": m["student"]["test"]}


def export_bundle(job: ExportJob, target_name: str, out: str | Path, argv: list[str] | None = None) -> dict:
    """Export `job` with the registered target `target_name` into the bundle directory `out`
    (built beside it and swapped in at the end; the caller has checked `out` with `check_output`)."""
    target = get_target(target_name)
    if job.mode not in target.modes:
        raise ConfigError(f"--mode {job.mode.value}: target {target_name} supports "
                          f"{', '.join(sorted(m.value for m in target.modes))}")
    if job.kind == "generate" and job.spec.embeddings.bits == 4:
        # The tied LM head reads the embedding table; every generative target stores it 8-bit.
        raise ConfigError(f"the tasks were trained with --compression {job.spec} (int4 embeddings): generative "
                          "exports support emb:int8 only (the tied LM head is an 8-bit table in every target); "
                          "retrain with emb:int8")
    command = "calora-export " + shlex.join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    with AtomicDir(Path(out), OutputKind.BUNDLE, "--out", command) as tmp:
        with step(f"{target_name}: exporting {', '.join(t.name for t in job.tasks)} ({job.mode.value})"):
            result = target.export(job, tmp)
        manifest = write_bundle_files(tmp, job, target_name, result, command, time.perf_counter() - start)
    return manifest


def write_bundle_files(root: Path, job: ExportJob, target_name: str, result: TargetResult, command: str,
                       seconds: float) -> dict:
    """Add the tokenizer, manifest.json and README.md around a target's artifacts in `root`."""
    tok_dir = root / "tokenizer"
    job.tokenizer.save_pretrained(str(tok_dir))
    result.weight_error.update(adapter_rounding(job))
    manifest = build_manifest(job, target_name, result, command, seconds)
    manifest["tokenizer"]["files"] = sorted(p.name for p in tok_dir.iterdir())
    check_manifest(manifest, root / MANIFEST_FILE)  # what we write must be what the loader reads
    write_json(root / MANIFEST_FILE, manifest)
    (root / "README.md").write_text(bundle_readme(manifest))
    return manifest

