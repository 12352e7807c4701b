"""The bad-input and fault catalogue of the three CLIs (issue: reliability first).

Each case runs a CLI in-process and asserts: the exit code, exactly one `PROG: error:` line naming
the culprit, no traceback, nothing changed outside the output path, and no partial artifact left.
Tiny random models only; the slow parts (training) are shared per session.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from calora import targets
from calora.export.cli import main as export_main
from calora.train.cli import main as train_main
from calora.validate.cli import main as validate_main

SMALL = ["--epochs", "30", "--lr", "2e-2", "--batch-size", "16", "--max-length", "16", "--lora-rank", "4", "--recovery-rank", "4",
         "--max-train-examples", "32", "--max-eval-examples", "16", "--compression", "int4:g32",
         "--checkpoint-every", "0"]


def tree(root: Path) -> dict[str, str]:
    """path -> sha256 of every file under `root` (hidden ones too): what 'nothing changed' compares."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def debris(root: Path) -> list[str]:
    return [str(p) for p in Path(root).rglob("*") if ".calora-tmp-" in p.name or ".calora-old-" in p.name
            or p.name.startswith(".calora-probe-") or ".tmp" in p.suffix]


def one_error(err: str, prog: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: ")]
    assert len(lines) == 1, err
    return lines[0]


def run(main, capsys, argv, prog):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


# ---- calora-train ---------------------------------------------------------------------------------
@pytest.fixture
def csv_file(tmp_path):
    def write(rows: list[tuple], header=("text", "label"), name="d.csv", encoding="utf-8") -> Path:
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows(rows)
        path = tmp_path / "in" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(buf.getvalue().encode(encoding))
        return path
    return write


def _rows(n=80, blank_every=0):
    words = {"positive": ["good", "great", "fun"], "negative": ["bad", "dull", "mess"]}
    rows = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        rows.append((f"the movie {words[label][i % 3]} {i}", "" if blank_every and i % blank_every == 0 else label))
    return rows


TRAIN_CASES = [
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--epochs", "nan"], "--epochs must be a finite number"),
    (["--max-length", "-5"], "--max-length must be"),
    (["--max-length", "0"], "--max-length must be"),
    (["--max-length", "100000"], "--max-length must be"),
    (["--compression", ""], "--compression: empty spec"),
    (["--compression", "int4+int8"], "both set the weight format"),
    (["--compression", "sparse:nan"], "compression.sparsity"),
    (["--batch-size", "0"], "--batch-size must be"),
    (["--lora-rank", "0"], "--lora-rank must be"),
    (["--recovery-rank", "-1"], "--recovery-rank must be"),
    (["--lora-dropout", "1.5"], "--lora-dropout must be"),
    (["--distill-alpha", "inf"], "--distill-alpha must be a finite number"),
    (["--text-column", "label"], "--text-column and --label-column name the same column"),
    (["--labels", "positive"], "--labels: name at least two"),
    (["--task", "../escape"], "--task must be a plain name"),
]


@pytest.mark.parametrize("argv, words", TRAIN_CASES, ids=[" ".join(a) for a, _ in TRAIN_CASES])
def test_train_refuses_bad_flags(capsys, tmp_path, tiny_bert, csv_file, argv, words):
    data = csv_file(_rows())
    out = tmp_path / "runs"
    base = ["--backbone", tiny_bert, "--task", "t", "--data", data, "--out", out, *SMALL]
    rc, err = run(train_main, capsys, [*base, *argv], "calora-train")
    assert rc == 2 and words in one_error(err, "calora-train"), err
    assert not out.exists()


def test_train_max_length_beyond_the_backbone(capsys, tmp_path, tiny_bert, csv_file):
    rc, err = run(train_main, capsys, ["--backbone", tiny_bert, "--task", "t", "--data", csv_file(_rows()), "--out",
                                       tmp_path / "r", *SMALL, "--max-length", "128"], "calora-train")
    assert rc == 2 and "--max-length 128: the backbone" in one_error(err, "calora-train") and "64 positions" in err
    assert not (tmp_path / "r").exists()  # refused once the backbone was loaded: the folder made for it is gone


DATA_CASES = [
    ("single class", lambda w: w([(f"good movie {i}", "positive") for i in range(40)]), "needs at least two"),
    ("blank labels only", lambda w: w([(f"movie {i}", "") for i in range(40)]), "no usable rows"),
    ("empty file", lambda w: w([]), "no rows"),
    ("missing label column", lambda w: w(_rows(), header=("text", "sentiment")), "--label-column 'label' not found"),
    ("not utf-8", lambda w: w([("caf\u00e9 " * 3, "positive")] * 40, encoding="latin-1"), "not UTF-8"),
    ("bad jsonl", lambda w: _write(w, "d.jsonl", '{"text": "a", "label": "x"}\n{oops\n'), "line 2 is not JSON"),
    ("jsonl not objects", lambda w: _write(w, "d.jsonl", "[1, 2]\n[3, 4]\n"), "must be a JSON object"),
    ("bad split value", lambda w: w([("a b", "positive", "training")] * 4, header=("text", "label", "split")),
     "has split 'training'"),
    ("class absent from train", lambda w: w([(f"good {i}", "positive", "train") for i in range(20)]
                                           + [(f"bad {i}", "negative", s) for i in range(20)
                                              for s in ("validation", "test")], header=("text", "label", "split")),
     "never occur in the train split"),
]


def _write(w, name: str, text: str) -> Path:
    path = w([], name=name)
    path.write_text(text)
    return path


@pytest.mark.parametrize("make, words", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_train_refuses_bad_data(capsys, tmp_path, tiny_bert, csv_file, make, words):
    data = make(csv_file)
    before = tree(data.parent)
    rc, err = run(train_main, capsys, ["--backbone", tiny_bert, "--task", "t", "--data", data, "--out",
                                       tmp_path / "runs", *SMALL], "calora-train")
    assert rc == 2 and words in one_error(err, "calora-train")
    assert tree(data.parent) == before
    assert not list((tmp_path / "runs").rglob("*.safetensors"))


def test_blank_labels_are_dropped_and_counted_and_long_texts_read(capsys, tmp_path, tiny_bert, csv_file):
    rows = _rows(blank_every=7) + [("great " * 220_000 + "fun", "positive")]  # a 1.3M-character field
    data = csv_file(rows)
    out = tmp_path / "runs"
    rc = train_main([str(a) for a in ["--backbone", tiny_bert, "--task", "t", "--data", data, "--out", out, *SMALL]])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "dropped 0 rows with a blank text and 12 with a blank or missing label" in captured.out
    cfg = json.loads((out / "t" / "calora" / "calora_config.json").read_text())
    assert cfg["task"]["label_names"] == ["negative", "positive"]  # '' never became a class
    assert cfg["task"]["record"]["dropped_rows"] == {"blank_text": 0, "blank_label": 12}


def test_diverged_training_saves_nothing(capsys, tmp_path, tiny_bert, csv_file, monkeypatch):
    import torch
    import torch.nn.functional as F

    real = F.cross_entropy  # what the classification objective calls
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: real(*a, **k) * torch.tensor(float("nan")))
    out = tmp_path / "runs"
    rc, err = run(train_main, capsys, ["--backbone", tiny_bert, "--task", "t", "--data", csv_file(_rows()),
                                       "--out", out, *SMALL], "calora-train")
    line = one_error(err, "calora-train")
    assert rc == 2 and "the loss is nan at step 1 of" in line and "nothing was saved" in line
    assert not list(out.rglob("*.safetensors")) and not debris(out)


def test_one_class_model_is_an_error_and_saves_nothing(capsys, tmp_path, tiny_bert, csv_file, monkeypatch):
    from calora.train import trainer

    real = trainer.predict

    def one_class(*a, **k):  # a classifier that learned to answer class 0 for everything
        logits = real(*a, **k)
        logits[:, 0] = 1e3
        return logits

    monkeypatch.setattr(trainer, "predict", one_class)
    out = tmp_path / "runs"
    rc, err = run(train_main, capsys, ["--backbone", tiny_bert, "--task", "t", "--data", csv_file(_rows()),
                                       "--out", out, *SMALL], "calora-train")
    line = one_error(err, "calora-train")
    assert rc == 2 and "predicts one class for all" in line and "nothing was saved" in line, line
    assert not list(out.rglob("*.safetensors")) and not debris(out)


def test_train_output_rules(capsys, tmp_path, tiny_bert, csv_file):
    data = csv_file(_rows())
    base = ["--backbone", tiny_bert, "--task", "t", "--data", data, *SMALL]
    # A regular file where the runs folder should go.
    (tmp_path / "afile").write_text("mine")
    rc, err = run(train_main, capsys, [*base, "--out", tmp_path / "afile" / "runs"], "calora-train")
    assert rc == 2 and "is a file, not a folder" in one_error(err, "calora-train")
    assert (tmp_path / "afile").read_text() == "mine"
    # A user's folder named like the task: never written into.
    (tmp_path / "runs" / "t").mkdir(parents=True)
    (tmp_path / "runs" / "t" / "notes.txt").write_text("mine")
    rc, err = run(train_main, capsys, [*base, "--out", tmp_path / "runs"], "calora-train")
    assert rc == 2 and "is not a calora task" in one_error(err, "calora-train")
    assert tree(tmp_path / "runs") == {"t/notes.txt": hashlib.sha256(b"mine").hexdigest()}
    # A trained task is replaced only with --overwrite.
    out = tmp_path / "runs2"
    assert train_main([str(a) for a in [*base, "--out", out]]) == 0
    before = tree(out / "t" / "calora")
    rc, err = run(train_main, capsys, [*base, "--out", out], "calora-train")
    assert rc == 2 and "pass --overwrite" in one_error(err, "calora-train")
    assert tree(out / "t" / "calora") == before
    assert train_main([str(a) for a in [*base, "--out", out, "--overwrite", "--seed", "1"]]) == 0
    assert tree(out / "t" / "calora") != before and not debris(out)


def test_disk_full_while_saving_leaves_nothing(capsys, tmp_path, tiny_bert, csv_file, monkeypatch):
    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(a[1]) if len(a) > 1 else None)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "runs"
    rc, err = run(train_main, capsys, ["--backbone", tiny_bert, "--task", "t", "--data", csv_file(_rows()),
                                       "--out", out, *SMALL], "calora-train")
    line = one_error(err, "calora-train")
    assert rc == 2 and "No space left on device" in line and "--out" in line
    assert not (out / "t" / "teacher").exists() and not (out / "t" / "calora").exists() and not debris(out)


def test_changed_checkpoint_settings_are_refused_then_restart(capsys, tmp_path, tiny_bert, csv_file, monkeypatch):
    from calora.train import trainer

    data = csv_file(_rows())
    out = tmp_path / "runs"
    base = ["--backbone", tiny_bert, "--task", "t", "--data", data, "--out", out, "--epochs", "10", "--batch-size",
            "8", "--max-length", "16", "--lora-rank", "4", "--recovery-rank", "4", "--compression", "int4:g32",
            "--checkpoint-every", "3"]
    real = trainer._save_checkpoint

    def save_then_interrupt(*args):
        real(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_save_checkpoint", save_then_interrupt)
    rc, err = run(train_main, capsys, base, "calora-train")
    assert rc == 130 and "interrupted (SIGINT)" in one_error(err, "calora-train")
    monkeypatch.setattr(trainer, "_save_checkpoint", real)
    ckpt = out / "t" / ".teacher-work" / "checkpoint.pt"
    assert ckpt.is_file() and not debris(out)
    for argv, words in ((["--lr", "0.01"], "--lr 0.001 -> 0.01"), (["--lora-rank", "8"], "trainable tensors"),
                        (["--batch-size", "4"], "--batch-size 8 -> 4")):
        rc, err = run(train_main, capsys, [*base, *argv], "calora-train")
        line = one_error(err, "calora-train")
        assert rc == 2 and words in line and str(ckpt) in line and "--restart" in line
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])  # truncated by a full disk or a copy
    rc, err = run(train_main, capsys, base, "calora-train")
    assert rc == 2 and f"{ckpt}: checkpoint is corrupt or truncated" in one_error(err, "calora-train")
    rc, err = run(train_main, capsys, [*base, "--lr", "0.01", "--restart"], "calora-train")
    assert rc == 0, err
    cfg = json.loads((out / "t" / "calora" / "calora_config.json").read_text())
    assert cfg["train"]["lr"] == 0.01 and not ckpt.exists() and not (out / "t" / ".teacher-work").exists()


def test_internal_error_is_one_line_with_the_traceback_file(capsys, tmp_path, tiny_bert, csv_file, monkeypatch):
    from calora.train import pipeline

    monkeypatch.setenv("CALORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pipeline, "prepare", lambda cfg: 1 / 0)
    rc, err = run(train_main, capsys, ["--backbone", tiny_bert, "--task", "t", "--data", csv_file(_rows()),
                                       "--out", tmp_path / "runs", *SMALL], "calora-train")
    line = one_error(err, "calora-train")
    assert rc == 3 and "internal error: ZeroDivisionError" in line and "--debug" in line
    logs = list((tmp_path / "cache" / "logs").glob("calora-train-*.traceback.txt"))
    assert len(logs) == 1 and "ZeroDivisionError" in logs[0].read_text() and str(logs[0]) in line
    rc, err = run(train_main, capsys, ["--backbone", tiny_bert, "--task", "t", "--data", csv_file(_rows()),
                                       "--out", tmp_path / "runs", *SMALL, "--debug"], "calora-train")
    assert rc == 3 and "Traceback" in err


# ---- calora-export --------------------------------------------------------------------------------
@pytest.fixture
def fake_target(monkeypatch):
    from test_export_bundle import FakeTarget

    monkeypatch.setitem(targets.TARGETS, "fake", "test_export_bundle:FakeTarget")
    FakeTarget.fail = False
    yield FakeTarget
    FakeTarget.fail = False


def test_export_never_destroys_what_it_did_not_write(capsys, tmp_path, tiny_runs, fake_target, monkeypatch):
    runs = tmp_path / "data" / "runs"
    shutil.copytree(tiny_runs / "toy_a", runs / "toy_a")
    work = tmp_path / "work"
    (work / "mine").mkdir(parents=True)
    (work / "mine" / "notes.txt").write_text("keep me")
    (work / "afile").write_text("keep me too")
    monkeypatch.chdir(work)
    before_work, before_runs = tree(work), tree(runs)
    base = ["--target", "fake", "--task", "toy_a", "--runs", runs]
    for out, words in ((".", "is the current directory"), ("..", "is the current directory"),
                       ("mine", "is not a calora bundle"), (runs, "would replace --runs"),
                       (runs.parent, "would replace --runs"), ("afile", "is not a folder calora wrote"),
                       ("afile/bundle", "is a file, not a folder")):
        rc, err = run(export_main, capsys, [*base, "--out", out, "--overwrite"], "calora-export")
        assert rc == 2 and words in one_error(err, "calora-export"), (out, err)
    rc, err = run(export_main, capsys, [*base, "--out", "b", "--max-length", "0"], "calora-export")
    assert rc == 2 and "--max-length 0" in one_error(err, "calora-export")
    assert tree(work) == before_work and tree(runs) == before_runs and not debris(tmp_path)


def test_export_replaces_a_bundle_only_with_overwrite_and_atomically(capsys, tmp_path, tiny_runs, fake_target,
                                                                     monkeypatch):
    out = tmp_path / "bundle"
    base = ["--target", "fake", "--task", "toy_a", "--runs", tiny_runs, "--out", out]
    assert export_main([str(a) for a in base]) == 0
    first = tree(out)
    rc, err = run(export_main, capsys, base, "calora-export")
    assert rc == 2 and "pass --overwrite" in one_error(err, "calora-export") and tree(out) == first
    fake_target.fail = True  # the new export fails halfway: the old bundle must be untouched
    rc, err = run(export_main, capsys, [*base, "--overwrite"], "calora-export")
    assert rc == 2 and "halfway" in one_error(err, "calora-export") and tree(out) == first
    fake_target.fail = False

    def full(job, out_dir):
        (out_dir / "partial.bin").write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / "partial.bin"))

    monkeypatch.setattr(fake_target, "export", lambda self, job, out_dir: full(job, out_dir))
    rc, err = run(export_main, capsys, [*base, "--overwrite"], "calora-export")
    line = one_error(err, "calora-export")
    assert rc == 2 and "No space left on device" in line and "--out" in line
    assert tree(out) == first and not debris(tmp_path)


def test_export_internal_error_exit_code(capsys, tmp_path, tiny_runs, fake_target, monkeypatch):
    monkeypatch.setenv("CALORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fake_target, "export", lambda self, job, out_dir: [][1])
    rc, err = run(export_main, capsys, ["--target", "fake", "--task", "toy_a", "--runs", tiny_runs, "--out",
                                        tmp_path / "b"], "calora-export")
    assert rc == 3 and "internal error: IndexError" in one_error(err, "calora-export")
    assert not (tmp_path / "b").exists() and not debris(tmp_path)


def test_export_with_custom_columns_reads_the_recorded_columns(tmp_path, tiny_bert, csv_file, fake_target):
    """A task trained from a user's CSV with its own column names exports (the smoke texts are read
    with the recorded columns) and validates against the recorded test split of that file."""
    rows = [(t, lab) for t, lab in _rows()]
    data = csv_file(rows, header=("utterance", "intent"))
    runs = tmp_path / "runs"
    assert train_main([str(a) for a in ["--backbone", tiny_bert, "--task", "intents", "--data", data, "--out", runs,
                                        "--text-column", "utterance", "--label-column", "intent", *SMALL]]) == 0
    out = tmp_path / "bundle"
    assert export_main(["--target", "fake", "--task", "intents", "--runs", str(runs), "--out", str(out)]) == 0
    from calora.export.job import load_job
    from calora.train.tasks import load_task
    from calora.validate.references import eval_data

    job = load_job(runs, ["intents"], "baked")
    test = load_task("intents", str(data), "utterance", "intent").splits["test"]
    assert list(job.smoke_texts) == list(test.texts[:8])
    cfg = json.loads((runs / "intents" / "calora" / "calora_config.json").read_text())
    ev = eval_data("intents", cfg, str(data), None)  # the training file, given again: its test split only
    assert list(ev.texts) == list(test.texts) and ev.matches_training and "recorded at training" in ev.split
    other = csv_file(rows[:10], header=("utterance", "intent"), name="other.csv")
    ev = eval_data("intents", cfg, str(other), None)  # another file without a split column: all its rows
    assert len(ev.texts) == 10 and ev.split.startswith("all rows")


# ---- calora-validate ------------------------------------------------------------------------------
def _broken_manifests():
    def drop(key):
        return lambda m: {k: v for k, v in m.items() if k != key}

    def put(path, value):
        def f(m):
            m = json.loads(json.dumps(m))
            node = m
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
            return m
        return f

    return [
        ("json array", lambda m: [m], "expected a JSON object"),
        ("no tasks", drop("tasks"), "tasks is missing"),
        ("newer schema", put(["schema_version"], 99), "manifest schema 99 is newer"),
        ("tasks not a list", put(["tasks"], {"a": 1}), "tasks must be a list"),
        ("file escapes", put(["backbone", "files"], [{"path": "../../etc/passwd", "role": "backbone", "task": None,
                                                       "bytes": 1, "sha256": "x"}]), "is not inside the bundle"),
        ("unknown target", put(["target"], "tflite"), "target 'tflite' is unknown"),
    ]


@pytest.mark.parametrize("name, mutate, words", _broken_manifests(), ids=[c[0] for c in _broken_manifests()])
def test_validate_refuses_broken_manifests(capsys, tmp_path, tiny_bundle, tiny_runs, name, mutate, words):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle("onnx", "baked"), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps(mutate(manifest)))
    rc, err = run(validate_main, capsys, [bundle, "--runs", tiny_runs], "calora-validate")
    line = one_error(err, "calora-validate")
    assert rc == 2 and words in line and "manifest.json" in line


@pytest.mark.parametrize("flag, words", [
    ("logit_steps=inf", "logit_steps=inf must be a finite number"),
    ("min_agreement=-1", "min_agreement=-1.0 must be a finite number in (0, 1]"),
    ("onnx.min_cosine=0", "min_cosine=0.0"),
    ("max_metric_drop=1", "max_metric_drop=1.0"),
    ("min_sqnr_db=nan", "min_sqnr_db=nan"),
])
def test_vacuous_thresholds_are_refused(capsys, tiny_bundle, tiny_runs, flag, words):
    rc, err = run(validate_main, capsys, [tiny_bundle("onnx", "baked"), "--runs", tiny_runs, "--threshold", flag],
                  "calora-validate")
    line = one_error(err, "calora-validate")
    assert rc == 2 and words in line and f"--threshold {flag}" in line


def test_validate_report_path_is_checked_before_work(capsys, tmp_path, tiny_bundle, tiny_runs, monkeypatch):
    from calora.validate import core

    called = []
    monkeypatch.setattr(core, "validate", lambda *a, **k: called.append(1))
    bundle = tiny_bundle("onnx", "baked")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    for report, words in ((tmp_path / "afile" / "r", "is a file, not a folder"),
                          (tmp_path / "mine", "is not a calora report"), (bundle, "would replace BUNDLE")):
        rc, err = run(validate_main, capsys, [bundle, "--runs", tiny_runs, "--report", report], "calora-validate")
        assert rc == 2 and words in one_error(err, "calora-validate")
    assert not called and (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_validate_crash_is_not_a_parity_failure(capsys, tmp_path, tiny_bundle, tiny_runs, monkeypatch):
    from calora.validate import core

    monkeypatch.setenv("CALORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(core, "validate", lambda *a, **k: {}["boom"])
    rc, err = run(validate_main, capsys, [tiny_bundle("onnx", "baked"), "--runs", tiny_runs], "calora-validate")
    assert rc == 3 and "internal error: KeyError" in one_error(err, "calora-validate")


def test_changed_task_weights_are_refused(tmp_path, tiny_runs):
    from calora.train.artifacts import load_student
    from calora.train.errors import ArtifactError

    task = tmp_path / "toy_a"
    shutil.copytree(tiny_runs / "toy_a", task)
    weights = task / "calora" / "lora" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one LoRA weight: still a valid safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="is corrupt or changed since training"):
        load_student(task)


def test_sigterm_exits_143_and_removes_the_partial_output(capsys, tmp_path):
    """SIGTERM (what `kill`, CI timeouts and container stops send) unwinds like Ctrl-C."""
    import argparse
    import signal

    from calora.train.cli_support import run_cli
    from calora.train.outputs import AtomicDir, OutputKind

    def body() -> int:
        with AtomicDir(tmp_path / "bundle", OutputKind.BUNDLE) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            os.kill(os.getpid(), signal.SIGTERM)
        return 0

    before = signal.getsignal(signal.SIGTERM)
    rc = run_cli("calora-export", argparse.Namespace(verbose=True, debug=False), body)
    assert rc == 143 and "interrupted (SIGTERM)" in one_error(capsys.readouterr().err, "calora-export")
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) is before


def test_a_failed_run_removes_only_the_empty_folders_it_made(tmp_path):
    """Folders made by a block that fails go again while they hold only calora's marker; one that
    holds anything else (a checkpoint of an interrupted run) stays, and so do the folders above it."""
    from calora.train.outputs import OutputKind, removed_if_unused, write_marker

    task = tmp_path / "runs" / "t"
    with pytest.raises(ValueError), removed_if_unused(task):
        task.mkdir(parents=True)
        write_marker(task, OutputKind.TASK)
        raise ValueError("refused after the folder was made")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt), removed_if_unused(task):
        task.mkdir(parents=True)
        write_marker(task, OutputKind.TASK)
        (task / "checkpoint.pt").write_bytes(b"resume from here")
        raise KeyboardInterrupt
    assert (task / "checkpoint.pt").read_bytes() == b"resume from here"
    with removed_if_unused(tmp_path / "ok"):  # success: nothing is removed
        (tmp_path / "ok").mkdir()
    assert (tmp_path / "ok").is_dir()


def test_stale_temporaries_of_a_killed_run_are_swept(tmp_path):
    """A SIGKILL leaves the temporary folder; the next write of the same output removes it, but
    never a folder that merely looks like one."""
    from calora.train.outputs import AtomicDir, OutputKind, write_marker

    stale = tmp_path / ".bundle.calora-tmp-999999-abcd1234"
    stale.mkdir()
    write_marker(stale, OutputKind.BUNDLE)
    lookalike = tmp_path / ".bundle.calora-tmp-999998-zzzz"
    lookalike.mkdir()
    (lookalike / "user.txt").write_text("not calora's")
    with AtomicDir(tmp_path / "bundle", OutputKind.BUNDLE) as tmp:
        (tmp / "x").write_text("1")
    assert not stale.exists() and (lookalike / "user.txt").is_file() and (tmp_path / "bundle" / "x").is_file()


@pytest.mark.parametrize("where", ["creating", "swapping"])
def test_an_interrupt_inside_the_atomic_steps_strands_nothing(where, monkeypatch, tmp_path):
    """Ctrl-C landing right after the temporary folder is created (before the `with` body runs, so
    no __exit__) or between the two renames of the swap: found by CI, where a SIGINT stranded a
    `.bundle.calora-tmp-*` folder. The signal is held for those few lines, then delivered."""
    import signal
    import tempfile as tf

    from calora.train import outputs

    final = tmp_path / "bundle"
    final.mkdir()
    (final / "old.txt").write_text("previous good output")
    # The handler the held signal goes to, set here: an earlier test or library in this process may
    # have left another one (in the full suite something did: the signal raised nothing), and the
    # CLIs install their own (run_cli) anyway.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    if where == "creating":
        real = tf.mkdtemp

        def mkdtemp(*a, **k):
            made = real(*a, **k)
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs at the next bytecode boundary
            return made
        monkeypatch.setattr(outputs.tempfile, "mkdtemp", mkdtemp)
    else:
        real_replace, calls = os.replace, []

        def replace(src, dst):
            real_replace(src, dst)
            calls.append(dst)
            if len(calls) == 1:  # the old output is aside, the new one not yet in place
                os.kill(os.getpid(), signal.SIGINT)
        monkeypatch.setattr(outputs.os, "replace", replace)

    try:
        with pytest.raises(KeyboardInterrupt):
            with outputs.AtomicDir(final, outputs.OutputKind.BUNDLE) as tmp:
                (tmp / "new.txt").write_text("new")
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.undo()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["bundle"], left
    expected = "old.txt" if where == "creating" else "new.txt"  # a finished swap is kept whole
    assert (final / expected).is_file() and len(list(final.glob("*.txt"))) == 1


def test_outputs_get_the_users_default_permissions(tmp_path):
    """mkdtemp's 0700 folder and safetensors' 0600 files would make a bundle unreadable to the
    other users of a CI runner or an app build: the finished output has the umask's modes."""
    import stat

    import torch
    from safetensors.torch import save_file

    from calora.train.outputs import AtomicDir, OutputKind

    old = os.umask(0o022)
    try:
        with AtomicDir(tmp_path / "bundle", OutputKind.BUNDLE) as tmp:
            (tmp / "sub").mkdir()
            save_file({"w": torch.zeros(2)}, str(tmp / "sub" / "adapter.safetensors"))
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    out = tmp_path / "bundle"
    assert mode(out) == 0o755 and mode(out / "sub") == 0o755
    assert mode(out / "sub" / "adapter.safetensors") == 0o644
