"""`accelerate launch --num_processes 2` on a CPU host: one process group (gloo), each process
trains half of every epoch's batches, only the main process writes, and the result loads."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ARGS = ["--epochs", "12", "--lr", "1e-2", "--batch-size", "16", "--max-length", "16", "--lora-rank", "4",
        "--recovery-rank", "4", "--compression", "int4:g32", "--checkpoint-every", "0"]


def test_two_processes_on_cpu_train_one_result(tiny_bert, sentiment_csv, tmp_path):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if launcher is None:
        pytest.skip("accelerate's launcher is not installed beside this Python")
    script = str(Path(sys.executable).parent / "calora-train")
    env = {k: v for k, v in os.environ.items() if k not in ("ACCELERATE_USE_CPU", "WORLD_SIZE", "LOCAL_RANK")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU host, also where CI has a GPU
    out = tmp_path / "runs"
    done = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                           script, "--backbone", tiny_bert, "--task", "t", "--data", sentiment_csv, "--out", str(out),
                           *ARGS], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("[calora] saved") == 1 and "trained by 2 processes" in done.stdout, done.stdout
    cfg = json.loads((out / "t" / "calora" / "calora_config.json").read_text())
    assert cfg["train"]["processes"] == 2
    metrics = json.loads((out / "t" / "calora" / "metrics.json").read_text())
    train_rows = cfg["task"]["record"]["counts"]["train"]
    train_rows = train_rows["examples"] if isinstance(train_rows, dict) else train_rows
    # each process took every other batch: half the optimizer steps of one process
    assert metrics["train_steps"] == 12 * math.ceil(train_rows / 16 / 2), (metrics["train_steps"], train_rows)
    assert metrics["student"]["test"]["accuracy"] > 0.9
    from calora.train.artifacts import load_student

    model, _ = load_student(out / "t" / "calora")  # what the main process wrote is complete
    assert model is not None


def test_learning_rate_schedule_spans_the_run_in_every_process_count(monkeypatch):
    """accelerate steps a prepared scheduler once per process per optimizer step: the schedule
    must still warm up, peak and reach zero exactly at the last of `total` optimizer steps."""
    import torch
    from accelerate import scheduler as acc_scheduler

    from calora.train.trainer import linear_schedule

    for processes in (1, 2, 4):
        monkeypatch.setattr(acc_scheduler, "AcceleratorState", lambda n=processes: type("S", (), {"num_processes": n}))
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([param], lr=1.0)
        opt.step_was_skipped = False  # what accelerate's optimizer wrapper reports
        sched = acc_scheduler.AcceleratedScheduler(linear_schedule(opt, 0.1, 100, processes), opt)
        lrs = []
        for _ in range(100):
            opt.step()
            sched.step()
            lrs.append(sched.get_last_lr()[0])
        assert max(lrs) == pytest.approx(1.0, abs=0.02), processes
        assert lrs[49] == pytest.approx(50 / 90, abs=0.02), (processes, lrs[49])  # linear from step 10 to 100
        assert lrs[-1] == pytest.approx(0.0, abs=1e-9) and lrs[-2] > 0, processes
