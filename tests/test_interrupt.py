"""Each stage interrupted mid-run, as a user's Ctrl-C or an OOM killer would: SIGINT exits cleanly
(code 130, one line, no partial output), SIGKILL leaves the previous good output untouched, and the
same command run again finishes to the result an uninterrupted run gives.

These run the real CLIs in subprocesses (imports take ~10 s each on 2 cores), on tiny models."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def cli(stage: str, *args) -> list[str]:
    return [sys.executable, "-m", f"calora.{stage}.cli", *map(str, args)]


def interrupt_when(cmd: list[str], ready, sig: int, timeout: float = 240) -> subprocess.CompletedProcess:
    """Start `cmd`, send `sig` as soon as `ready(stderr so far)` is true (polled every 20 ms), wait
    for the end."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout

        def so_far() -> str:
            err.seek(0)
            return err.read()

        while not ready(so_far()):
            if proc.poll() is not None:
                pytest.fail(f"{cmd[2]} ended (rc {proc.returncode}) before it could be interrupted:\n"
                            f"{so_far()[-2000:]}")
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{cmd[2]}: never reached the point to interrupt")
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
        out.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), so_far())


def temporaries(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if ".calora-tmp-" in p.name or ".calora-old-" in p.name]


def test_train_interrupted(tiny_bert, sentiment_csv, tmp_path):
    from calora.train.artifacts import read_json
    from calora.train.cli import main

    out = tmp_path / "runs"
    small = ["--backbone", tiny_bert, "--task", "t", "--data", sentiment_csv, "--out", out, "--batch-size", "16",
             "--max-length", "16", "--lora-rank", "4", "--recovery-rank", "4", "--compression", "int4:g32",
             "--lr", "1e-2"]
    assert main([*map(str, small), "--epochs", "6"]) == 0  # the previous good result
    good = tree(out / "t" / "calora")
    long = [*small, "--epochs", "30", "--checkpoint-every", "5", "--overwrite", "--seed", "3"]
    ckpt = out / "t" / ".teacher-work" / "checkpoint.pt"

    done = interrupt_when(cli("train", *long), lambda _: ckpt.is_file(), signal.SIGINT)
    assert done.returncode == 130, done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if line.startswith("calora-train:")] == [
        "calora-train: interrupted (SIGINT); no partial output was left (a training run resumes from its checkpoint)"]
    assert "Traceback" not in done.stderr and tree(out / "t" / "calora") == good and not temporaries(out)
    ckpt.unlink()

    done = interrupt_when(cli("train", *long), lambda _: ckpt.is_file(), signal.SIGKILL)
    assert done.returncode == -signal.SIGKILL
    assert tree(out / "t" / "calora") == good and ckpt.is_file()
    resumed = subprocess.run(cli("train", *long), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming teacher from" in resumed.stdout and not temporaries(out)
    metrics = read_json(out / "t" / "calora" / "metrics.json")
    # The same command uninterrupted, in another folder: the resumed run reaches the same weights.
    straight = tmp_path / "straight"
    assert main([*map(str, long[:long.index("--out")]), "--out", str(straight),
                 *map(str, long[long.index("--out") + 2:])]) == 0
    from safetensors.torch import load_file

    for name in ("lora/adapter_model.safetensors", "recovery.safetensors"):
        a, b = load_file(str(out / "t" / "calora" / name)), load_file(str(straight / "t" / "calora" / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), (name, k)
    assert metrics["student"] == read_json(straight / "t" / "calora" / "metrics.json")["student"]


def test_export_interrupted(tiny_runs, tmp_path):
    out = tmp_path / "bundle"
    argv = ["--target", "onnx", "--task", "toy_a", "--mode", "baked", "--runs", tiny_runs, "--out", out]
    first = subprocess.run(cli("export", *argv), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    good = tree(out)

    def building(_) -> bool:
        return any(p.name.startswith(".bundle.calora-tmp-") for p in tmp_path.iterdir())

    done = interrupt_when(cli("export", *argv, "--overwrite"), building, signal.SIGINT)
    assert done.returncode == 130 and "calora-export: interrupted (SIGINT)" in done.stderr
    assert "Traceback" not in done.stderr and tree(out) == good and not temporaries(tmp_path)

    done = interrupt_when(cli("export", *argv, "--overwrite"), building, signal.SIGKILL)
    assert done.returncode == -signal.SIGKILL and tree(out) == good
    assert temporaries(tmp_path)  # a SIGKILL cannot clean up: the next run must
    again = subprocess.run(cli("export", *argv, "--overwrite"), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not temporaries(tmp_path)
    # The re-run gives the artifact an uninterrupted export gives (the .onnx is byte-reproducible).
    onnx = [k for k in good if k.endswith(".onnx")]
    assert onnx and all(tree(out)[k] == good[k] for k in onnx)


def test_validate_interrupted(tiny_bundle, tiny_runs, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle("onnx", "baked"), bundle)
    report = tmp_path / "report"
    argv = [bundle, "--runs", tiny_runs, "--report", report, "--record"]
    first = subprocess.run(cli("validate", *argv), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    good_report, good_bundle = tree(report), tree(bundle)
    for sig in (signal.SIGINT, signal.SIGKILL):  # sent when the first task's artifact starts running
        done = interrupt_when(cli("validate", *argv, "--overwrite"), lambda err: "onnx-baked/toy_a" in err, sig)
        if sig == signal.SIGINT:
            assert done.returncode == 130 and "calora-validate: interrupted (SIGINT)" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
        assert tree(report) == good_report and tree(bundle) == good_bundle
    again = subprocess.run(cli("validate", *argv, "--overwrite"), capture_output=True, text=True)
    assert again.returncode == 0 and not temporaries(tmp_path)
