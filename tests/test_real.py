"""Real weights, real data (slow: run with `pytest -m slow`). A smoke of the whole stage, not a claim:
the accuracy claims are in train/results/, produced by the commands written there."""

import json

import pytest

from calora.train.artifacts import load_student
from calora.train.cli import main

pytestmark = pytest.mark.slow


def test_minilm_rotten_tomatoes_short_run_and_exact_reload(tmp_path):
    # 2048 examples, 2 epochs: with fewer (256 x 1, 1024 x 2) the teacher still predicts one class
    # for every validation example, which calora-train refuses to save (about 2 min on 2 cores).
    rc = main(["--out", str(tmp_path), "--max-train-examples", "2048", "--epochs", "2", "--max-eval-examples", "128",
               "--checkpoint-every", "3"])
    assert rc == 0
    cfg = json.loads((tmp_path / "rotten_tomatoes/calora/calora_config.json").read_text())
    assert cfg["backbone"]["family"] == "bert" and cfg["compression"]["text"] == "int4:g32+sparse:0.5+emb:int8"
    size = cfg["compression"]["size"]
    assert size["dense_bytes"] * 4 < size["fp32_bytes"]  # int4 linears + int8 embeddings: > 4x smaller
    model, _ = load_student(tmp_path / "rotten_tomatoes")
    assert len(cfg["recovery"]["layers"]) == 6 * 6 + 1  # six linears per layer, plus the pooler
