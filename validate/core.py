"""`calora-validate`'s library entry point: run every check on every bundle, collect the results.

Per bundle, in this fixed order: files (present, sha256 as in the manifest), the artifact opened in
its own runtime, names, shapes, structure (from the target's runner and from the manifest against
the trained task), tokenization, then per task values (logits against the compressed PyTorch
model) and the task metric (against it, with the uncompressed teacher shown). Where a value check
fails, the reference recomputed in float64 is put beside it (`noise_floor`: a diagnosis, no gate
moves). Nothing stops at the first failure: everything is collected; `Report.raise_for_failures()`
raises one `ParityError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from calora.targets import TARGETS, get_target
from calora.targets.base import Stage, _dir_bytes
from calora.export.manifest import read_manifest
from calora.train.artifacts import read_json, write_json
from calora.train.errors import ArtifactError, CaloraError, ConfigError
from calora.train.spec import CompressionSpec, QuantScheme

from . import noise_floor
from .checks import Check, ParityError, Status, compare, error_histogram, ordered, primary_metric, task_metrics
from .references import EvalData, References, encode, eval_data, find_task_dir, tokenizer_checks
from .noise_floor import DEFAULT_EXAMPLES as NOISE_FLOOR_EXAMPLES
from .thresholds import parse_overrides, resolve, runtime_activations

REPORT_SCHEMA_VERSION = 1
_CHUNK = 32  # rows per runtime call, so long evaluations show progress


@dataclasses.dataclass(frozen=True)
class ValidateConfig:
    """What to validate and against what. `data` maps task -> file ("*" = the only task)."""

    bundles: tuple[Path, ...]
    tasks: tuple[str, ...] = ()
    data: tuple[tuple[str, str], ...] = ()
    max_examples: int | None = None
    runs: str | None = None
    threshold_flags: tuple[str, ...] = ()
    threshold_file: str | None = None
    record: bool = False
    text_column: str | None = None  # of --data; None = the column the task was trained with
    label_column: str | None = None
    noise_floor_examples: int = NOISE_FLOOR_EXAMPLES  # where a value check fails; 0 = never

    def __post_init__(self) -> None:
        if not self.bundles:
            raise ConfigError("BUNDLE: name at least one bundle directory")
        if len(set(map(str, self.bundles))) != len(self.bundles):
            raise ConfigError("BUNDLE: a bundle is named twice")
        for b in self.bundles:
            if not Path(b).is_dir():
                raise ArtifactError(f"BUNDLE {b}: no such folder")
            read_manifest(b)  # a damaged or foreign manifest fails here, before any model loads
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError(f"--max-examples {self.max_examples}: must be >= 1")
        if self.noise_floor_examples < 0:
            raise ConfigError(f"--noise-floor-examples {self.noise_floor_examples}: must be >= 0 (0 = off)")
        parse_overrides(list(self.threshold_flags), self.threshold_file, list(TARGETS))  # fail early

    def data_for(self, task: str) -> str | None:
        d = dict(self.data)
        return d.get(task, d.get("*"))


@dataclasses.dataclass
class TaskResult:
    task: str
    examples: int
    data: dict
    primary_metric: str
    metrics: dict  # teacher / pytorch_compressed / artifact -> metrics (or {"skipped": reason})
    values: dict | None
    logit_tolerance: dict | None
    histogram: dict | None
    generation: dict | None = None  # generative tasks: greedy agreement with PyTorch
    speed: dict | None = None  # generative tasks: prefill/decode tokens per second in the runtime
    sample: list | None = None  # generative tasks: a few responses, PyTorch's and the artifact's
    noise_floor: dict | None = None  # where a value check failed: the reference's own float64 noise


@dataclasses.dataclass
class BundleResult:
    path: str
    target: str
    mode: str
    runtime: str
    thresholds: dict
    threshold_sources: dict
    backbone_fingerprint: str
    tasks: list[TaskResult]


@dataclasses.dataclass
class Report:
    command: str
    started: str
    seconds: float
    machine: str
    bundles: list[BundleResult]
    checks: list[Check]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == Status.FAIL]

    @property
    def skipped(self) -> list[Check]:
        return [c for c in self.checks if c.status == Status.SKIP]

    @property
    def passed(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> None:
        if self.failures:
            raise ParityError(self.failures)


def machine() -> str:
    import os

    return f"{platform.machine()} CPU x{os.cpu_count()} threads, {platform.system()} {platform.release()}"


def validate(config: ValidateConfig, command: str = "calora-validate") -> Report:
    """Validate every bundle in `config`; returns the report (call `raise_for_failures` to gate)."""
    overrides = parse_overrides(list(config.threshold_flags), config.threshold_file, list(TARGETS))
    refs = References()
    data_cache: dict[tuple[str, str | None], EvalData] = {}
    start, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S %Z")
    checks: list[Check] = []
    results: list[BundleResult] = []
    for bundle in config.bundles:
        res, found = _validate_bundle(Path(bundle), config, overrides, refs, data_cache)
        results.append(res)
        checks += found
    report = Report(command, started, round(time.perf_counter() - start, 1), machine(), results, ordered(checks))
    if config.record:
        for res in results:
            _record(Path(res.path), report)
    return report


def _validate_bundle(bundle: Path, config: ValidateConfig, overrides: dict, refs: References,
                     data_cache: dict) -> tuple[BundleResult, list[Check]]:
    manifest = read_manifest(bundle)
    target_name = manifest["target"]
    in_bundle = [t["name"] for t in manifest["tasks"]]
    unknown = [t for t in config.tasks if t not in in_bundle]
    if unknown:
        raise ConfigError(f"--task {','.join(unknown)}: not in bundle {bundle} (its tasks: {', '.join(in_bundle)})")
    entries = [t for t in manifest["tasks"] if not config.tasks or t["name"] in config.tasks]
    thresholds, sources = resolve(target_name, overrides, runtime_activations(manifest))
    label = str(bundle)
    checks: list[Check] = []

    def add(stage: Stage, name: str, ok: bool | None, detail: str, task: str | None = None,
            measured: float | None = None, threshold: float | None = None) -> None:
        status = Status.SKIP if ok is None else Status.PASS if ok else Status.FAIL
        checks.append(Check(stage, name, status, detail, label, target_name, task, measured, threshold))

    _file_checks(bundle, manifest, add)
    runner, runtime = None, f"{target_name} (could not open)"
    try:
        runner = get_target(target_name).open(bundle, manifest)
        runtime = runner.runtime
    except Exception as exc:  # noqa: BLE001 - an artifact that will not open is a failure to report
        add(Stage.FILES, "artifacts open in their runtime", False, f"{type(exc).__name__}: {str(exc)[:300]}")
    if runner is not None:
        try:
            for f in runner.findings():
                add(f.stage, f.name, f.ok, f.detail, f.task)
        except Exception as exc:  # noqa: BLE001 - e.g. a program the runtime refuses to load
            add(Stage.STRUCTURE, "artifact structure readable", False, f"{type(exc).__name__}: {str(exc)[:300]}")

    task_dirs, configs = {}, {}
    for entry in entries:
        name = entry["name"]
        try:
            task_dirs[name] = find_task_dir(name, entry, config.runs)
            configs[name] = read_json(task_dirs[name] / "calora_config.json")
        except CaloraError as exc:
            add(Stage.NAMES, "trained task found (PyTorch reference)", False, str(exc), name)
            continue
        _manifest_checks(manifest, entry, configs[name], add)

    tok = _bundle_tokenizer(bundle, add)
    task_results: list[TaskResult] = []
    texts_all: list[str] = []
    generative = manifest.get("kind") == "generate"
    for entry in entries:
        name = entry["name"]
        if name not in configs:
            continue
        if generative:
            texts_all += _prompt_texts(name, configs[name], config)
            continue
        key = (name, config.data_for(name))
        if key not in data_cache:
            data_cache[key] = eval_data(name, configs[name], key[1], config.max_examples,
                                        config.text_column, config.label_column)
        texts_all += data_cache[key].texts
    if tok is not None and configs:
        first = next(iter(configs.values()))
        for n, ok, detail in tokenizer_checks(tok, first["backbone"]["source"], bundle, texts_all,
                                              int(manifest["max_sequence_length"]), cpp=target_name == "executorch"):
            add(Stage.TOKENIZATION, n, ok, detail)

    for entry in entries:
        name = entry["name"]
        if name not in configs:
            continue
        if generative:
            task_results.append(_gen_task(bundle, manifest, entry, configs[name], task_dirs[name], tok, runner,
                                          thresholds, refs, config, add))
            continue
        data = data_cache[(name, config.data_for(name))]
        task_results.append(_task(bundle, manifest, entry, configs[name], task_dirs[name], data, tok, runner,
                                  thresholds, refs, add, config.noise_floor_examples))
    res = BundleResult(label, target_name, manifest["mode"], runtime, thresholds.to_dict(), sources,
                       manifest["backbone"]["fingerprint"], task_results)
    return res, checks


def _file_checks(bundle: Path, manifest: dict, add) -> None:
    files = list(manifest["backbone"]["files"]) + [f for t in manifest["tasks"] for f in t["files"]]
    for f in files:
        path = bundle / f["path"]
        if not path.exists():
            add(Stage.FILES, f"{f['path']} present", False, f"{path} is missing", f.get("task"))
            continue
        data = path.read_bytes() if path.is_file() else _dir_bytes(path)
        digest = hashlib.sha256(data).hexdigest()
        add(Stage.FILES, f"{f['path']} sha256", digest == f["sha256"],
            f"{len(data):,} bytes, sha256 as in the manifest" if digest == f["sha256"] else
            f"sha256 {digest[:16]}… differs from the manifest's {f['sha256'][:16]}… (file changed or corrupt)",
            f.get("task"))
    for name in manifest.get("tokenizer", {}).get("files", []):
        if not (bundle / "tokenizer" / name).is_file():
            add(Stage.FILES, f"tokenizer/{name} present", False, f"{bundle / 'tokenizer' / name} is missing")


def _manifest_checks(manifest: dict, entry: dict, cfg: dict, add) -> None:
    name = entry["name"]
    bb, trained = manifest["backbone"]["fingerprint"], cfg["compression"]["fingerprint"]
    ok = bb == entry.get("backbone_fingerprint") == trained
    add(Stage.NAMES, "adapter and backbone fingerprints agree", ok,
        f"bundle backbone {bb[:23]}…, task entry {str(entry.get('backbone_fingerprint'))[:23]}…, trained task "
        f"{trained[:23]}…" + ("" if ok else ": this adapter belongs to another compressed backbone"), name)
    want = list(cfg["task"]["label_names"])
    add(Stage.NAMES, "label names as trained", entry["label_names"] == want,
        f"manifest {entry['label_names']}, trained {want}" + ("" if entry["label_names"] == want else
                                                              ": the app would mislabel predictions"), name)


def _bundle_tokenizer(bundle: Path, add):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(bundle / "tokenizer"))
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a broken folder
        add(Stage.TOKENIZATION, "bundle tokenizer loads", False, f"{bundle / 'tokenizer'}: {type(exc).__name__}: {exc}")
        return None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _task(bundle: Path, manifest: dict, entry: dict, cfg: dict, task_dir: Path, data: EvalData, tok, runner,
          thresholds, refs: References, add, noise_floor_examples: int = 0) -> TaskResult:
    from calora.train.backbones import load_tokenizer

    name = entry["name"]
    max_length = int(manifest["max_sequence_length"])
    trained_labels = list(cfg["task"]["label_names"])
    prim = primary_metric(list(data.labels), trained_labels)
    metrics: dict[str, dict] = {}
    data_info = {"source": data.source, "split": data.split, "examples": len(data.texts),
                 "matches_training_split": data.matches_training}
    # The references get the training tokenizer's ids, the artifact the bundle's (as the app would).
    train_ids, train_mask = encode(load_tokenizer(cfg["backbone"]["source"]), list(data.texts), max_length)
    student, _ = refs.student(task_dir)
    ref = refs.logits(task_dir, "student", student, train_ids, train_mask)
    metrics["pytorch_compressed"] = task_metrics([trained_labels[i] for i in ref.argmax(-1)], list(data.labels), trained_labels)
    teacher = refs.teacher(task_dir, cfg)
    if isinstance(teacher, str):
        metrics["teacher"] = {"skipped": teacher}
        add(Stage.METRIC, "uncompressed teacher evaluated", None, teacher, name)
    else:
        t_logits = refs.logits(task_dir, "teacher", teacher, train_ids, train_mask)
        metrics["teacher"] = task_metrics([trained_labels[i] for i in t_logits.argmax(-1)], list(data.labels), trained_labels)
    if tok is None or runner is None:
        add(Stage.VALUES, "artifact ran", False, "not run: the bundle's tokenizer or artifact could not be loaded", name)
        return TaskResult(name, len(data.texts), data_info, prim, metrics, None, None, None)
    ids, mask = encode(tok, list(data.texts), max_length)
    try:
        parts = []
        with tqdm(total=len(ids), desc=f"{manifest['target']}-{manifest['mode']}/{name}", unit="ex", leave=False) as bar:
            for i in range(0, len(ids), _CHUNK):
                parts.append(runner.logits(name, ids[i:i + _CHUNK], mask[i:i + _CHUNK]))
                bar.update(len(parts[-1]))
        got = np.concatenate(parts)
    except Exception as exc:  # noqa: BLE001 - a runtime error is a parity failure, with its message
        add(Stage.VALUES, "artifact ran", False, f"{runner.runtime}: {type(exc).__name__}: {str(exc)[:300]}", name)
        return TaskResult(name, len(data.texts), data_info, prim, metrics, None, None, None)
    if got.shape != ref.shape:
        add(Stage.SHAPES, "artifact output shape", False, f"artifact {list(got.shape)} vs PyTorch {list(ref.shape)}", name)
        return TaskResult(name, len(data.texts), data_info, prim, metrics, None, None, None)
    parity_model, ref_label = refs.parity(task_dir, cfg, runtime_activations(manifest))
    parity_ref = ref if parity_model is student else \
        refs.logits(task_dir, "parity", parity_model, train_ids, train_mask)
    values = compare(parity_ref, got) | {"reference": ref_label}
    quantized = CompressionSpec.from_dict(manifest["backbone"]["compression"]["spec"]).deployed()[0] != QuantScheme.NONE
    tol, how = thresholds.logit_tolerance(quantized, values["max_abs_reference_logit"])
    n = values["examples"]
    gates = {"agreement": values["agreement"] >= thresholds.min_agreement,
             "max_abs_logit_error": values["max_abs_logit_error"] <= tol,
             "cosine": values["cosine"] >= thresholds.min_cosine,
             "sqnr_db": values["sqnr_db"] >= thresholds.min_sqnr_db}
    # A miss is put beside the reference's own float64 noise (a diagnosis; no gate moves).
    nf = noise_floor.measure(parity_model, train_ids, train_mask, parity_ref, got, noise_floor_examples,
                             cache=refs.float64) \
        if noise_floor_examples and not all(gates.values()) else None

    def why(key: str) -> str:
        return "" if nf is None or gates[key] else noise_floor.describe(nf, key)

    add(Stage.VALUES, "argmax agreement", gates["agreement"],
        f"{values['agreement']:.4f} of {n} against {ref_label} (min {thresholds.min_agreement:g})" + why("agreement"),
        name, values["agreement"], thresholds.min_agreement)
    add(Stage.VALUES, "max |logit error|", gates["max_abs_logit_error"],
        f"{values['max_abs_logit_error']:.4g} (tolerance {tol:.4g} = {how})" + why("max_abs_logit_error"), name,
        values["max_abs_logit_error"], tol)
    add(Stage.VALUES, "cosine", gates["cosine"],
        f"{values['cosine']:.6f} (min {thresholds.min_cosine:g})" + why("cosine"), name, values["cosine"],
        thresholds.min_cosine)
    add(Stage.VALUES, "SQNR", gates["sqnr_db"],
        f"{values['sqnr_db']:.1f} dB (min {thresholds.min_sqnr_db:g} dB)" + why("sqnr_db"), name, values["sqnr_db"],
        thresholds.min_sqnr_db)
    labels = list(entry["label_names"])
    if got.shape[1] != len(labels):
        add(Stage.METRIC, f"{prim} vs PyTorch", False, f"manifest has {len(labels)} label names for {got.shape[1]} logits", name)
    else:
        metrics["artifact"] = task_metrics([labels[i] for i in got.argmax(-1)], list(data.labels), trained_labels)
        a, p = metrics["artifact"][prim], metrics["pytorch_compressed"][prim]
        add(Stage.METRIC, f"{prim} vs PyTorch", p - a <= thresholds.max_metric_drop,
            f"artifact {a:.4f}, PyTorch compressed {p:.4f} (drop {p - a:+.4f}, max {thresholds.max_metric_drop:g})"
            + ("" if isinstance(teacher, str) else f"; uncompressed teacher {metrics['teacher'][prim]:.4f}"),
            name, p - a, thresholds.max_metric_drop)
    return TaskResult(name, n, data_info, prim, metrics, values, {"value": tol, "rule": how},
                      error_histogram(parity_ref, got), noise_floor=nf)


def _prompt_texts(name: str, cfg: dict, config: ValidateConfig) -> list[str]:
    from calora.train.gen_tasks import load_recorded_gen

    if config.data_for(name) is not None:
        raise ConfigError(f"--data: generative task {name!r} is validated on its recorded test split; "
                          "a --data file for generative bundles is not supported yet")
    from .generative import DEFAULT_EXAMPLES

    prompts = load_recorded_gen(name, cfg["task"]["record"]).splits["test"].prompts
    return list(prompts[:config.max_examples or DEFAULT_EXAMPLES])


def _gen_task(bundle: Path, manifest: dict, entry: dict, cfg: dict, task_dir: Path, tok, runner, thresholds,
              refs: References, config: ValidateConfig, add) -> TaskResult:
    from .generative import gen_task

    name = entry["name"]
    if tok is None or runner is None:
        add(Stage.VALUES, "artifact ran", False, "not run: the bundle's tokenizer or artifact could not be loaded", name)
        return TaskResult(name, 0, {}, "exact_match", {}, None, None, None)
    try:
        r = gen_task(entry, cfg, task_dir, manifest, runner, tok, thresholds, refs, config.max_examples, add,
                     config.noise_floor_examples)
    except CaloraError:
        raise
    except Exception as exc:  # noqa: BLE001 - a runtime error is a parity failure, with its message
        add(Stage.VALUES, "artifact ran", False, f"{runner.runtime}: {type(exc).__name__}: {str(exc)[:300]}", name)
        return TaskResult(name, 0, {}, "exact_match", {}, None, None, None)
    return TaskResult(name, r["examples"], r["data"], "exact_match", r["metrics"], r["values"], r["logit_tolerance"],
                      None, r["generation"], r["speed"], r["sample"], r["noise_floor"])


def _record(bundle: Path, report: Report) -> None:
    """Write this run's outcome for `bundle` into its manifest's validation block (atomically)."""
    path = bundle / "manifest.json"
    manifest = read_manifest(bundle)
    mine = [c for c in report.checks if c.bundle == str(bundle)]
    manifest.setdefault("validation", {})["full_parity"] = {
        "status": "fail" if any(c.status == Status.FAIL for c in mine) else "pass",
        "date": report.started, "command": report.command, "machine": report.machine,
        "checks": {s.value: sum(1 for c in mine if c.status == s) for s in Status},
        "tasks": {t.task: {"examples": t.examples, "values": t.values, "metrics": t.metrics}
                  for b in report.bundles if b.path == str(bundle) for t in b.tasks},
    }
    write_json(path, manifest)
