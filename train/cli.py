"""`calora-train`: the training stage's command line. Thin: parse, build a RunConfig, call the library."""

from __future__ import annotations

import argparse
import sys

from .adapters import Activation
from .backbones import OfflineBackbone
from .cli_support import add_common_flags, run_cli
from .config import CALoRASettings, LoraSettings, MixedPrecision, RunConfig, TeacherOutputs, TrainSettings
from .spec import DEFAULT_COMPRESSION, CompressionSpec
from .tasks import task_names


# Defaults come from the config dataclasses: one source of truth for the library and the CLI.
_R, _L, _C, _T = RunConfig(), LoraSettings(), CALoRASettings(), TrainSettings()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calora-train",
        description="Train a teacher LoRA on the uncompressed backbone (or import one), compress the backbone, "
                    "and train CA-LoRA (inheritance + recovery + distillation) on it. "
                    "Runs on CPU or GPU; `accelerate launch calora-train ...` for several GPUs.")
    src = p.add_argument_group("sources")
    src.add_argument("--backbone", default=_R.backbone,
                     help=f"offline default ({', '.join(b.value for b in OfflineBackbone)}), a local HF folder, "
                          "or a hub id (default: %(default)s)")
    src.add_argument("--task", default=_R.task,
                     help=f"offline task ({', '.join(task_names())}) or, with --data, your name for your data "
                          "(default: %(default)s)")
    src.add_argument("--data", help="CSV/TSV/JSONL file with text and label columns (optional 'split' column), "
                                    "or a GLUE-format SST-2 folder")
    src.add_argument("--text-column", default=_R.text_column)
    src.add_argument("--label-column", default=_R.label_column)
    src.add_argument("--teacher", help="an existing PEFT LoRA directory for the uncompressed backbone "
                                       "(default: train one); it is copied into OUT/TASK/teacher")
    src.add_argument("--labels", help="comma-separated class names in the order of the head's outputs (an imported "
                                      "--teacher's head was trained in some order: name it; default: sorted names)")
    src.add_argument("--out", default=_R.out, help="runs folder; the task lands in OUT/TASK (default: %(default)s)")
    src.add_argument("--overwrite", action="store_true",
                     help="replace OUT/TASK/calora when calora already trained this task there")
    src.add_argument("--restart", action="store_true",
                     help="discard a checkpoint an interrupted earlier run left, instead of resuming it")
    c = p.add_argument_group("compression")
    c.add_argument("--compression", default=DEFAULT_COMPRESSION,
                   help="spec, e.g. int4:g32+sparse:0.5+emb:int8, nf4+deploy:int4:g32, int8+sparse:2:4+ffn:0.25 "
                        "(default: %(default)s; 'none' for no compression)")
    lo = p.add_argument_group("LoRA (teacher trained here)")
    lo.add_argument("--lora-rank", type=int, default=_L.rank)
    lo.add_argument("--lora-alpha", type=float, default=_L.alpha)
    lo.add_argument("--lora-dropout", type=float, default=_L.dropout)
    lo.add_argument("--lora-targets", nargs="+", help="module names (default: attention query/value)")
    ca = p.add_argument_group("CA-LoRA")
    ca.add_argument("--no-inherit", action="store_true", help="ablation: start LoRA from scratch")
    ca.add_argument("--no-recover", action="store_true", help="ablation: no recovery modules")
    ca.add_argument("--no-distill", action="store_true", help="ablation: task loss only")
    ca.add_argument("--recovery-rank", type=int, default=_C.recovery_rank)
    ca.add_argument("--recovery-activation", default=_C.recovery_activation.value, choices=[a.value for a in Activation])
    ca.add_argument("--recovery-targets", nargs="+", help="layer name suffixes (default: every compressed linear)")
    ca.add_argument("--distill-alpha", type=float, default=_C.distill_alpha,
                    help="weight of the hidden-state MSE (per-element mean over real tokens) (default: %(default)s)")
    ca.add_argument("--distill-logits", action="store_true", help="also match the teacher's logits (MSE)")
    ca.add_argument("--teacher-outputs", default=_C.teacher_outputs.value, choices=[t.value for t in TeacherOutputs])
    tr = p.add_argument_group("training")
    tr.add_argument("--epochs", type=float, default=_T.epochs, help="(default: %(default)s)")
    tr.add_argument("--batch-size", type=int, default=_T.batch_size)
    tr.add_argument("--lr", type=float, default=_T.lr, help="AdamW learning rate (default: %(default)s)")
    tr.add_argument("--max-length", type=int, default=_T.max_length)
    tr.add_argument("--seed", type=int, default=_T.seed)
    tr.add_argument("--max-train-examples", type=int)
    tr.add_argument("--max-eval-examples", type=int)
    tr.add_argument("--mixed-precision", default=_T.mixed_precision.value, choices=[m.value for m in MixedPrecision])
    tr.add_argument("--checkpoint-every", type=int, default=_T.checkpoint_every, help="optimizer steps between checkpoints")
    add_common_flags(p)
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        backbone=args.backbone, task=args.task, data=args.data, text_column=args.text_column,
        label_column=args.label_column, compression=CompressionSpec.parse(args.compression), teacher=args.teacher,
        labels=tuple(args.labels.split(",")) if args.labels is not None else None,
        overwrite=args.overwrite, restart=args.restart,
        lora=LoraSettings(args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_targets),
        calora=CALoRASettings(inherit=not args.no_inherit, recover=not args.no_recover, distill=not args.no_distill,
                              recovery_rank=args.recovery_rank, recovery_activation=args.recovery_activation,
                              recovery_targets=args.recovery_targets, distill_alpha=args.distill_alpha,
                              distill_logits=args.distill_logits, teacher_outputs=args.teacher_outputs),
        train=TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                            seed=args.seed, max_train_examples=args.max_train_examples,
                            max_eval_examples=args.max_eval_examples, mixed_precision=args.mixed_precision,
                            checkpoint_every=args.checkpoint_every),
        out=args.out)


def _summary(result: dict) -> str:
    rows = [("uncompressed + teacher LoRA", result["teacher"])]
    if result.get("inherited_untrained"):
        rows.append(("compressed + inherited LoRA (untrained)", result["inherited_untrained"]))
    rows.append(("compressed + CA-LoRA", result["student"]))
    lines = [f"{'model':<42} {'val acc':>8} {'test acc':>9} {'test F1':>8}"]
    for name, m in rows:
        lines.append(f"{name:<42} {m['validation']['accuracy']:>8.4f} {m['test']['accuracy']:>9.4f} "
                     f"{m['test']['f1_macro']:>8.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`calora-train`; returns the exit code (0, 2 bad input, 3 internal error, 130/143 interrupted)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        cfg = config_from_args(args)
        from .pipeline import run  # heavy imports only after the arguments are known to be good

        result = run(cfg)
        print(_summary(result))
        print(f"[calora] saved {cfg.out}/{cfg.task}/calora (metrics.json, calora_config.json)")
        return 0

    return run_cli("calora-train", args, body)


if __name__ == "__main__":
    sys.exit(main())
