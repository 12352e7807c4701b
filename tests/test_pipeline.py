"""The training stage end to end on a tiny random model and a small CSV task (seconds on CPU)."""

import json

import pytest
import torch

from calora.train import trainer
from calora.train.artifacts import load_student, save_student
from calora.train.cli import main
from calora.train.config import CALoRASettings, RunConfig, TeacherOutputs, TrainSettings
from calora.train.pipeline import evaluate, fit_student, prepare, run_record
from calora.train.spec import CompressionSpec

FAST = ["--epochs", "6", "--batch-size", "16", "--lr", "1e-2", "--max-length", "16", "--lora-rank", "4",
        "--recovery-rank", "4", "--compression", "int4:g32+sparse:0.5"]


def _cfg(backbone, data, out, **calora):
    return RunConfig(backbone=backbone, task="toy", data=data, out=str(out),
                     compression=CompressionSpec.parse("int4:g32+sparse:0.5"),
                     calora=CALoRASettings(recovery_rank=4, **calora),
                     train=TrainSettings(epochs=6, batch_size=16, lr=1e-2, max_length=16, checkpoint_every=0))


def test_cli_trains_teacher_and_calora_and_saves_everything(tiny_bert, sentiment_csv, tmp_path, capsys):
    rc = main(["--backbone", tiny_bert, "--task", "toy", "--data", sentiment_csv, "--out", str(tmp_path), *FAST])
    assert rc == 0
    task = tmp_path / "toy"
    for f in ("teacher/adapter_config.json", "teacher/adapter_model.safetensors", "calora/lora/adapter_config.json",
              "calora/recovery.safetensors", "calora/calora_config.json", "calora/metrics.json"):
        assert (task / f).is_file(), f
    cfg = json.loads((task / "calora/calora_config.json").read_text())
    assert cfg["compression"]["fingerprint"].startswith("sha256:")
    assert cfg["recovery"]["layers"] and cfg["calora"]["inherit"] and cfg["task"]["label_names"] == ["negative", "positive"]
    metrics = json.loads((task / "calora/metrics.json").read_text())
    assert metrics["teacher"]["test"]["accuracy"] > 0.8  # the toy task is learnable; training really trains
    assert metrics["student"]["test"]["accuracy"] > 0.8
    assert "compressed + CA-LoRA" in capsys.readouterr().out
    assert not list(task.glob(".work-*/checkpoint.pt"))  # finished runs leave no checkpoint


def test_cli_bf16_teacher_trains_and_is_recorded(tiny_bert, sentiment_csv, tmp_path):
    rc = main(["--backbone", tiny_bert, "--task", "toy", "--data", sentiment_csv, "--out", str(tmp_path), *FAST,
               "--teacher-precision", "bf16"])
    assert rc == 0
    cfg = json.loads((tmp_path / "toy/calora/calora_config.json").read_text())
    assert cfg["calora"]["teacher_precision"] == "bf16" and cfg["train"]["mixed_precision"] == "no"
    metrics = json.loads((tmp_path / "toy/calora/metrics.json").read_text())
    assert metrics["student"]["test"]["accuracy"] > 0.8


@pytest.mark.parametrize("flags, label", [
    ({}, "compressed + CA-LoRA"), ({"recover": False}, "CA-LoRA without recover"),
    ({"recover": False, "distill": False}, "CA-LoRA without recover / distill"),
    ({"inherit": False, "recover": False, "distill": False}, "compressed + LoRA from scratch"),
    ({"inherit": False, "recover": False, "distill": False, "loftq": True}, "compressed + LoftQ-initialised LoRA")])
def test_summary_names_an_ablation_run_as_such(flags, label):
    """`calora-train --no-recover` printed its student as "compressed + CA-LoRA"; the row name now
    says what was trained, as the ablation tables do."""
    from calora.train.ablation import VARIANTS
    from calora.train.cli import student_label

    assert student_label(CALoRASettings(**flags)) == label
    assert student_label(CALoRASettings(**flags), compressed=False) == label.replace("compressed +", "uncompressed +")
    if label in VARIANTS:
        assert {"loftq": False, **VARIANTS[label]} == {"inherit": True, "recover": True, "distill": True,
                                                      "loftq": False, **flags}


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_llama"])
def test_reload_is_bit_identical(backbone, sentiment_csv, tmp_path, request):
    path = request.getfixturevalue(backbone)
    ctx = prepare(_cfg(path, sentiment_csv, tmp_path, teacher_outputs=TeacherOutputs.CACHE))
    settings = ctx.cfg.calora
    model, out, info, lora_config = fit_student(ctx, settings)
    model = model.cpu().eval()
    save_student(model, lora_config, tmp_path / "saved", run_record(ctx, settings, info, lora_config, 0), out)
    loaded, cfg = load_student(tmp_path / "saved")
    batch = ctx.tokenizer(list(ctx.task.splits["test"].texts[:16]), padding=True, return_tensors="pt")
    with torch.no_grad():
        want, got = model(**batch).logits, loaded(**batch).logits
    assert torch.equal(want, got)
    assert evaluate(loaded, ctx, "reloaded") == out["student"]


def test_killed_run_resumes_to_the_same_weights(tiny_bert, sentiment_csv, tmp_path, monkeypatch):
    cfg = _cfg(tiny_bert, sentiment_csv, tmp_path)
    ctx = prepare(cfg)
    s = ctx.cfg.calora
    import dataclasses
    ctx.cfg = dataclasses.replace(ctx.cfg, train=dataclasses.replace(ctx.cfg.train, checkpoint_every=5))
    ref, _, _, _ = fit_student(ctx, s, seed=3)

    real_save = trainer._save_checkpoint

    def save_then_die(accelerator, model, optimizer, scheduler, step, *rest):
        real_save(accelerator, model, optimizer, scheduler, step, *rest)
        if step == 10:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(trainer, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit_student(ctx, s, seed=4)
    monkeypatch.setattr(trainer, "_save_checkpoint", real_save)
    assert (ctx.task_dir / ".work-inherit+recover+distill-seed4" / "checkpoint.pt").is_file()
    resumed, out, _, _ = fit_student(ctx, s, seed=4)
    assert out["resumed_from_step"] == 10
    straight, _, _, _ = fit_student(ctx, s, seed=4)
    for (n, a), (_, b) in zip(trainer.trainable_state(resumed).items(), trainer.trainable_state(straight).items()):
        assert torch.allclose(a, b, atol=1e-6), n
    assert not torch.equal(trainer.trainable_state(ref)["classifier.weight"],
                           trainer.trainable_state(straight)["classifier.weight"])


def test_ablation_switches_change_what_is_trained(tiny_bert, sentiment_csv, tmp_path):
    ctx = prepare(_cfg(tiny_bert, sentiment_csv, tmp_path))
    full, info_full = fit_student(ctx, CALoRASettings(recovery_rank=4), eval_inherited=True)[0:3:2]
    plain, info_plain = fit_student(ctx, CALoRASettings(inherit=False, recover=False, distill=False))[0:3:2]
    assert info_full["recovery_layers"] and not info_plain["recovery_layers"]
    assert info_full["trainable_parameters"] > info_plain["trainable_parameters"]
    assert "inherited_untrained" in info_full and "inherited_untrained" not in info_plain


def test_ablation_scores_the_inherited_lora_alone_without_training(tiny_bert, sentiment_csv, tmp_path, monkeypatch):
    """`--variants 'compressed + inherited LoRA, untrained'` evaluates the teacher's LoRA on the
    compressed backbone and trains nothing but the teacher."""
    from calora.train import ablation, pipeline

    trained = []
    real_fit = pipeline.fit
    monkeypatch.setattr(pipeline, "fit", lambda *a, **k: trained.append(k["desc"]) or real_fit(*a, **k))

    common = ["--backbone", tiny_bert, "--task", "toy", "--data", sentiment_csv, "--out", str(tmp_path / "runs"),
              *FAST, "--seeds", "0"]
    assert ablation.main([*common, "--results", str(tmp_path / "alone"), "--variants", ablation.INHERITED]) == 0
    record = json.loads(next((tmp_path / "alone").glob("ablation_*.json")).read_text())
    assert list(record["rows"]) == ["uncompressed + LoRA (teacher)", ablation.INHERITED]
    assert [(r["variant"], r["train_steps"]) for r in record["runs"]] == [(ablation.INHERITED, 0)]
    assert trained == ["teacher"]
    assert "| compressed + inherited LoRA, untrained |" in next((tmp_path / "alone").glob("*.md")).read_text()


def test_inherited_score_is_the_one_a_calora_run_records(tiny_bert, sentiment_csv, tmp_path):
    from calora.train.pipeline import score_inherited

    ctx = prepare(_cfg(tiny_bert, sentiment_csv, tmp_path))
    alone = score_inherited(ctx)
    _, info = fit_student(ctx, CALoRASettings(recovery_rank=4), eval_inherited=True)[0:3:2]
    assert alone["student"] == info["inherited_untrained"] and alone["train_steps"] == 0
    assert alone["compression"]["fingerprint"] == info["fingerprint"]


def test_loftq_baseline_trains_from_the_compression_residual(tiny_bert, sentiment_csv, tmp_path):
    ctx = prepare(_cfg(tiny_bert, sentiment_csv, tmp_path))
    settings = CALoRASettings(inherit=False, recover=False, distill=False, loftq=True)
    model, out, info, lora_config = fit_student(ctx, settings)
    assert settings.label == "loftq" and out["loftq"]["layers"] == len(lora_config.target_modules)
    assert out["loftq"]["relative_residual_after"] < out["loftq"]["relative_residual_before"]
    assert run_record(ctx, settings, info, lora_config, 0)["calora"]["loftq"] is True
