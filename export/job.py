"""Load trained task directories into one `ExportJob`, refusing tasks that do not belong together."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from calora.targets.base import Activations, AdapterDType, Attention, ExportJob, Mode, TaskModel
from calora.train.artifacts import load_student
from calora.train.kinds import KindName, kind_of
from calora.train.backbones import load_tokenizer
from calora.train.errors import AdapterMismatchError, ArtifactError, CaloraError, ConfigError
from calora.train.spec import CompressionSpec
from calora.train.tasks import load_recorded

SMOKE_EXAMPLES = 8


def load_job(runs_dir: str | Path, tasks: list[str], mode: Mode | str, max_length: int | None = None,
             adapter_dtype: AdapterDType | str | None = None, activations: Activations | str | None = None,
             attention: Attention | str | None = None) -> ExportJob:
    """Read ``runs_dir/<task>/calora`` for each task. All tasks must share one compressed backbone
    (same source, spec and fingerprint); each model is rebuilt and fingerprint-checked on load.
    `adapter_dtype`: how a swappable bundle stores the adapter files (None: the spec's default,
    `AdapterDType.default_for`) or a shared one its programs' adapters (None: float32); `activations`:
    `--activations` (None: the target's own; the target refuses a choice it cannot make); `attention`:
    `--attention` (None: fused)."""
    AdapterDType.check(Mode(mode), adapter_dtype)
    job = _load_job(runs_dir, tasks, Mode(mode), max_length)
    if adapter_dtype is not None:
        dtype = AdapterDType(adapter_dtype)
    else:
        dtype = AdapterDType.FLOAT32 if job.mode == Mode.SHARED else AdapterDType.default_for(job.spec)
    return dataclasses.replace(job, adapter_dtype=dtype,
                               activations=Activations(activations) if activations is not None else None,
                               attention=Attention(attention) if attention is not None else None)


def _load_job(runs_dir: str | Path, tasks: list[str], mode: Mode, max_length: int | None) -> ExportJob:
    runs_dir = Path(runs_dir)
    if not tasks:
        raise ConfigError("--task: name at least one task")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"--task: a task is named twice in {tasks}")
    loaded: list[TaskModel] = []
    for name in tasks:
        task_dir = runs_dir / name / "calora"
        if not (task_dir / "calora_config.json").is_file():
            known = sorted(p.parent.name for p in runs_dir.glob("*/calora/calora_config.json"))
            raise ArtifactError(f"--task {name!r}: no trained task at {task_dir} "
                                f"(trained tasks in {runs_dir}: {', '.join(known) or 'none'})")
        model, cfg = load_student(task_dir)
        loaded.append(TaskModel(name, tuple(cfg["task"]["label_names"]), model, cfg, task_dir, kind_of(cfg).value))
    kinds = {t.kind for t in loaded}
    if len(kinds) > 1:
        raise ConfigError(f"--task: {', '.join(f'{t.name} ({t.kind})' for t in loaded)} mix task kinds; "
                          "one bundle holds tasks of one kind")
    first = loaded[0].config
    for t in loaded[1:]:
        for key, what in ((("backbone", "source"), "backbone"), (("compression", "fingerprint"), "compressed backbone")):
            a, b = first[key[0]][key[1]], t.config[key[0]][key[1]]
            if a != b:
                raise AdapterMismatchError(f"--task {t.name!r} was trained on another {what} than "
                                           f"{loaded[0].name!r} ({str(b)[:30]} vs {str(a)[:30]}); "
                                           "one bundle serves one backbone")
    positions = getattr(loaded[0].model.config, "max_position_embeddings", None)
    if max_length is None:
        max_length = int(first["task"]["max_length"])
        if loaded[0].kind == KindName.GENERATE.value:
            max_length = default_context(first, positions)
    if max_length < 2 or (positions and max_length > positions):
        raise ConfigError(f"--max-length {max_length}: must be between 2 and the backbone's {positions} positions")
    tokenizer = load_tokenizer(first["backbone"]["source"])
    spec = CompressionSpec.from_dict(first["compression"]["spec"])
    if loaded[0].kind == KindName.GENERATE.value:
        from .gen_job import generative_job

        return generative_job(tuple(loaded), mode, spec, first["compression"]["fingerprint"], max_length, tokenizer)
    texts: list[str] = []
    unreadable: list[str] = []
    for t in loaded:
        try:  # the task's own data, read as training read it (its recorded columns and label order)
            data = load_recorded(t.name, t.config["task"]["record"], list(t.label_names))
            texts += list(data.splits["test"].texts[:SMOKE_EXAMPLES])
        except CaloraError as exc:  # the task's data may have moved since training: smoke on the others
            unreadable.append(f"{t.name}: {exc}")
    if not texts:
        raise ArtifactError("no test texts could be read for the smoke comparison: " + "; ".join(unreadable))
    return ExportJob(tuple(loaded), mode, spec, first["compression"]["fingerprint"], max_length, tokenizer, tuple(texts))


def default_context(cfg: dict, positions: int | None) -> int:
    """A generative bundle's maximum context when --max-length is not given: the training length
    plus the response budget, rounded up to a multiple of 64, within the backbone's positions."""
    gen = cfg["task"].get("generation", {})
    want = int(cfg["task"]["max_length"]) + int(gen.get("max_new_tokens", 32))
    want = -(-want // 64) * 64
    return min(want, positions) if positions else want
