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
