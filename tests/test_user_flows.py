"""Two documented user flows end to end, through the real CLIs and a real runtime (ONNX Runtime):
a user's CSV with its own column names, and a PEFT LoRA made elsewhere imported as the teacher
(with its label order given by --labels), trained -> exported -> validated, the teacher evaluated."""

from __future__ import annotations

import csv
import json
import random

import torch


def _intents_csv(path):
    rng = random.Random(1)
    words = {"play": ["good", "great", "superb", "loved"], "stop": ["awful", "bad", "dull", "hated"]}  # tiny vocab
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["utterance", "intent"])
        for i in range(240):
            intent = "play" if i % 2 else "stop"
            w.writerow([" ".join(rng.sample(words[intent], 2) + ["the", "movie"]), intent])
    return path


def _peft_lora_elsewhere(backbone: str, data, order: list[str], out):
    """A LoRA trained with peft alone (no calora), head output i = order[i]."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"]))
    rows = list(csv.DictReader(data.open()))
    enc = tok([r["utterance"] for r in rows], padding=True, return_tensors="pt")
    y = torch.tensor([order.index(r["intent"]) for r in rows])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(30):
        loss = model(**enc, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    return out


def test_user_csv_and_imported_teacher_train_export_validate(tiny_bert, tmp_path, capsys):
    from calora.export.cli import main as export_main
    from calora.train.cli import main as train_main
    from calora.validate.cli import main as validate_main

    data = _intents_csv(tmp_path / "intents.csv")
    lora = _peft_lora_elsewhere(tiny_bert, data, ["stop", "play"], tmp_path / "their-lora")  # not sorted order
    runs = tmp_path / "runs"
    common = ["--backbone", tiny_bert, "--data", str(data), "--text-column", "utterance", "--label-column", "intent",
              "--teacher", str(lora), "--out", str(runs), "--epochs", "2", "--batch-size", "16", "--max-length", "16",
              "--recovery-rank", "4", "--compression", "int4:g32+sparse:0.5", "--checkpoint-every", "0"]
    # Sorted order (play, stop) is the wrong one for this head: the teacher's accuracy shows it.
    assert train_main(["--task", "wrong_order", *common]) == 0
    out = capsys.readouterr().out
    assert "head output i = label i of {0: 'play', 1: 'stop'}" in out and "pass --labels" in out
    wrong = json.loads((runs / "wrong_order" / "calora" / "metrics.json").read_text())["teacher"]["test"]["accuracy"]
    assert train_main(["--task", "intents", "--labels", "stop,play", *common]) == 0
    cfg = json.loads((runs / "intents" / "calora" / "calora_config.json").read_text())
    right = json.loads((runs / "intents" / "calora" / "metrics.json").read_text())["teacher"]["test"]["accuracy"]
    assert cfg["task"]["label_names"] == ["stop", "play"] and cfg["task"]["record"]["label_order"] == "--labels"
    assert right > 0.9 and wrong < 0.1, (right, wrong)
    imported = json.loads((runs / "intents" / "teacher" / "imported.json").read_text())
    assert imported["imported_from"] == str(lora.resolve()) and set(imported["sha256"]) >= {"adapter_config.json"}

    bundle = tmp_path / "bundle"
    assert export_main(["--target", "onnx", "--task", "intents", "--runs", str(runs), "--out", str(bundle)]) == 0
    report = tmp_path / "report"
    rc = validate_main([str(bundle), "--runs", str(runs), "--report", str(report)])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((report / "report.json").read_text())
    task = result["bundles"][0]["tasks"][0]
    assert task["data"]["split"] == "test" and task["data"]["matches_training_split"] is True
    assert "skipped" not in task["metrics"]["teacher"] and task["metrics"]["teacher"]["accuracy"] > 0.9
    # The training file given explicitly: its recorded test split, not every row.
    rc = validate_main([str(bundle), "--runs", str(runs), "--data", str(data), "--report", str(report),
                        "--overwrite"])
    assert rc == 0
    task = json.loads((report / "report.json").read_text())["bundles"][0]["tasks"][0]
    assert "recorded at training" in task["data"]["split"] and task["data"]["matches_training_split"] is True


def test_head_of_another_size_is_refused(tiny_bert, tmp_path, capsys, sentiment_csv):
    from calora.train.cli import main as train_main

    data = _intents_csv(tmp_path / "intents.csv")
    lora = _peft_lora_elsewhere(tiny_bert, data, ["stop", "play"], tmp_path / "their-lora")
    three = tmp_path / "three.csv"
    rows = list(csv.DictReader(data.open()))
    with three.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i, r in enumerate(rows):
            w.writerow([r["utterance"], ["a", "b", "c"][i % 3]])
    rc = train_main(["--backbone", tiny_bert, "--task", "three", "--data", str(three), "--teacher", str(lora),
                     "--out", str(tmp_path / "runs"), "--epochs", "1", "--max-length", "16"])
    err = capsys.readouterr().err
    assert rc == 2 and "its classification head has 2 outputs but task 'three' has 3 labels" in err
