"""`calora-train`: the training stage's command line. Thin: parse, build a RunConfig, call the library."""

from __future__ import annotations

import argparse
import sys

from .adapters import Activation
from .backbones import OfflineBackbone
from .cli_support import add_common_flags, run_cli
from .config import (KIND_TRAIN_DEFAULTS, CALoRASettings, GenerationSettings, LoraSettings, MixedPrecision,
                     RunConfig, TeacherOutputs, TeacherPrecision, TrainSettings)
from .gen_tasks import gen_task_names
from .kinds import KINDS
from .spec import DEFAULT_COMPRESSION, CompressionSpec
from .tasks import task_names


# Defaults come from the config dataclasses: one source of truth for the library and the CLI.
_R, _L, _C, _T, _G = RunConfig(), LoraSettings(), CALoRASettings(), TrainSettings(), GenerationSettings()


#: `--max-train-examples all`: the whole split, also where the task kind's default is a CPU-sized cap.
ALL = "all"


def _count_or_all(text: str) -> int | str:
    if text.strip().lower() == ALL:
        return ALL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or '{ALL}', got {text!r}") from None


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
                     help=f"offline task: classification ({', '.join(task_names())}) or generation "
                          f"({', '.join(gen_task_names())}); with --data, your name for your data "
                          "(default: %(default)s)")
    src.add_argument("--kind", choices=list(KINDS),
                     help="task kind (default: generate for the offline generative tasks or when --prompt-column / "
                          "--response-column is given, else classify)")
    src.add_argument("--data", help="CSV/TSV/JSONL file with text and label columns (optional 'split' column), "
                                    "or a GLUE-format SST-2 folder")
    src.add_argument("--text-column", default=_R.text_column)
    src.add_argument("--label-column", default=_R.label_column)
    src.add_argument("--prompt-column", help=f"generate: prompt column of --data (default: {_R.prompt_column})")
    src.add_argument("--response-column", help=f"generate: response column of --data (default: {_R.response_column})")
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
    ca.add_argument("--loftq", action="store_true",
                    help="baseline: initialise the fresh LoRA (needs --no-inherit) from the rank-r SVD of the "
                         "compression residual W - C(W), LoftQ's one-step init for a fixed compressed backbone")
    ca.add_argument("--recovery-rank", type=int, default=_C.recovery_rank)
    ca.add_argument("--recovery-activation", default=_C.recovery_activation.value, choices=[a.value for a in Activation])
    ca.add_argument("--recovery-targets", nargs="+",
                    help="layer name suffixes (default: every compressed linear); fewer layers run faster "
                         "after export, e.g. dense (BERT) or gate_proj up_proj down_proj (Llama's MLP; "
                         "measured in docs/RESULTS.md)")
    ca.add_argument("--distill-alpha", type=float, default=_C.distill_alpha,
                    help="weight of the hidden-state MSE (per-element mean over real tokens) (default: %(default)s)")
    ca.add_argument("--distill-logits", action="store_true", help="also match the teacher's logits (MSE)")
    ca.add_argument("--teacher-outputs", default=_C.teacher_outputs.value, choices=[t.value for t in TeacherOutputs],
                    help="online: a teacher forward pass every step; cache: one pass over the training set kept in "
                         "memory (its final hidden states; classification only), cheaper from the second epoch "
                         "(default: %(default)s)")
    ca.add_argument("--teacher-precision", default=_C.teacher_precision.value,
                    choices=[t.value for t in TeacherPrecision],
                    help="what the teacher's forward pass for the distillation targets computes in: training (as "
                         "--mixed-precision) or bf16 (2.5x faster on SmolLM2 on 2 CPU cores with AMX, making a CA-LoRA "
                         "step 1.11-1.21x faster; wants native bfloat16: AMX, AVX512-BF16 or a GPU; accuracy measured "
                         "unchanged for classification, not yet shown for generation: docs/RESULTS.md section 7) "
                         "(default: %(default)s)")
    ca.add_argument("--kl-temperature", type=float, default=_C.kl_temperature,
                    help="generate: temperature of the KL distillation on next-token distributions (default: %(default)s)")
    ca.add_argument("--distill-hidden", action="store_true", help="generate: also match the teacher's final hidden "
                                                                  "states (MSE)")
    ge = p.add_argument_group("generation (generate tasks)")
    ge.add_argument("--max-response-tokens", type=int, default=_G.max_response_tokens)
    ge.add_argument("--max-new-tokens", type=int, default=_G.max_new_tokens, help="greedy decoding in evaluation")
    ge.add_argument("--eval-generate-examples", type=int, default=_G.eval_generate_examples,
                    help="examples per split decoded greedily in evaluation (default: %(default)s)")
    tr = p.add_argument_group("training")
    tr.add_argument("--epochs", type=float, default=_T.epochs, help="(default: %(default)s)")
    tr.add_argument("--batch-size", type=int, help=f"(default: {_T.batch_size}; generate: "
                                                   f"{KIND_TRAIN_DEFAULTS['generate']['batch_size']})")
    tr.add_argument("--lr", type=float, default=_T.lr, help="AdamW learning rate (default: %(default)s)")
    tr.add_argument("--max-length", type=int, help=f"tokens per example (default: {_T.max_length}; generate: "
                                                   f"{KIND_TRAIN_DEFAULTS['generate']['max_length']}, prompt + response)")
    tr.add_argument("--seed", type=int, default=_T.seed)
    tr.add_argument("--max-train-examples", type=_count_or_all, metavar="N|all",
                    help="default: all; generate: "
                         f"{KIND_TRAIN_DEFAULTS['generate']['max_train_examples']} (CPU-sized; "
                         "'all' for the whole split on a GPU host)")
    tr.add_argument("--max-eval-examples", type=_count_or_all, metavar="N|all",
                    help=f"default: all; generate: {KIND_TRAIN_DEFAULTS['generate']['max_eval_examples']}")
    tr.add_argument("--mixed-precision", default=_T.mixed_precision.value, choices=[m.value for m in MixedPrecision])
    tr.add_argument("--checkpoint-every", type=int, default=_T.checkpoint_every, help="optimizer steps between checkpoints")
    add_common_flags(p)
    return p


def kind_from_args(args: argparse.Namespace) -> str:
    if args.kind:
        return args.kind
    if args.task in gen_task_names() or args.prompt_column or args.response_column:
        return "generate"
    return "classify"


def config_from_args(args: argparse.Namespace) -> RunConfig:
    kind = kind_from_args(args)
    # Flags the user did not set take the kind's defaults (CPU-sized for generation), then the config's.
    fill = {k: getattr(_T, k) for k in ("batch_size", "max_length", "max_train_examples", "max_eval_examples")}
    fill |= KIND_TRAIN_DEFAULTS[kind]
    t = fill | {k: getattr(args, k) for k in fill if getattr(args, k) is not None}
    t = {k: None if v == ALL else v for k, v in t.items()}  # None: the whole split
    return RunConfig(
        backbone=args.backbone, task=args.task, data=args.data, text_column=args.text_column, kind=kind,
        prompt_column=args.prompt_column or _R.prompt_column, response_column=args.response_column or _R.response_column,
        label_column=args.label_column, compression=CompressionSpec.parse(args.compression), teacher=args.teacher,
        labels=tuple(args.labels.split(",")) if args.labels is not None else None,
        overwrite=args.overwrite, restart=args.restart,
        lora=LoraSettings(args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_targets),
        calora=CALoRASettings(inherit=not args.no_inherit, recover=not args.no_recover, distill=not args.no_distill,
                              loftq=args.loftq, recovery_rank=args.recovery_rank, recovery_activation=args.recovery_activation,
                              recovery_targets=args.recovery_targets, distill_alpha=args.distill_alpha,
                              distill_logits=args.distill_logits, teacher_outputs=args.teacher_outputs,
                              teacher_precision=args.teacher_precision,
                              kl_temperature=args.kl_temperature, distill_hidden=args.distill_hidden),
        train=TrainSettings(epochs=args.epochs, batch_size=t["batch_size"], lr=args.lr, max_length=t["max_length"],
                            seed=args.seed, max_train_examples=t["max_train_examples"],
                            max_eval_examples=t["max_eval_examples"], mixed_precision=args.mixed_precision,
                            checkpoint_every=args.checkpoint_every),
        generation=GenerationSettings(args.max_response_tokens, args.max_new_tokens, args.eval_generate_examples),
        out=args.out)


def student_label(calora, compressed: bool = True) -> str:
    """The student's row name as the ablation tables name it (`ablation.VARIANTS`, the one list of
    row names): an ablation run is not CA-LoRA."""
    from .ablation import VARIANTS

    flags = {name: getattr(calora, name) for name in ("inherit", "recover", "distill", "loftq")}
    label = next((row for row, f in VARIANTS.items() if {"loftq": False, **f} == flags), None)
    if label is None:  # a combination the ablation tables have no row for
        off = [name for name in ("inherit", "recover", "distill") if not flags[name]]
        label = f"CA-LoRA without {' / '.join(off)}" + (" (LoftQ-initialised)" if calora.loftq else "")
    return label if compressed else label.replace("compressed +", "uncompressed +")


def _summary(kind: str, result: dict, calora, compressed: bool = True) -> str:
    from .kinds import get_kind

    rows = [("uncompressed + teacher LoRA", result["teacher"])]
    if result.get("inherited_untrained"):
        rows.append(("compressed + inherited LoRA (untrained)", result["inherited_untrained"]))
    rows.append((student_label(calora, compressed), result["student"]))
    return get_kind(kind).summary(rows)


def main(argv: list[str] | None = None) -> int:
    """`calora-train`; returns the exit code (0, 2 bad input, 3 internal error, 130/143 interrupted)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        cfg = config_from_args(args)
        from .pipeline import run  # heavy imports only after the arguments are known to be good

        result = run(cfg)
        from .processes import is_main, num_processes

        if is_main():  # `accelerate launch --num_processes N`: one summary, from the process that saved
            print(_summary(cfg.kind, result, cfg.calora, not cfg.compression.is_identity))
            n = num_processes()
            print(f"[calora] saved {cfg.out}/{cfg.task}/calora (metrics.json, calora_config.json)"
                  + (f"; trained by {n} processes" if n > 1 else ""))
        return 0

    return run_cli("calora-train", args, body)


if __name__ == "__main__":
    sys.exit(main())
