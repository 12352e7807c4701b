"""`calora-export`: thin CLI over `calora.export` (parse, load the job, call the target)."""

from __future__ import annotations

import argparse
import json
import sys

from pathlib import Path

from calora.targets import TARGETS
from calora.targets.base import Activations, AdapterDType, Attention, Mode
from calora.train.cli_support import add_common_flags, run_cli
from calora.train.config import MAX_LENGTH
from calora.train.errors import CaloraError, ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calora-export",
        description="Lower the compressed backbone plus trained task adapters to a mobile runtime and write a "
                    "bundle (artifacts, per-task adapters, tokenizer, manifest.json, README.md).")
    p.add_argument("--target", required=True, choices=list(TARGETS), help="runtime to export to")
    p.add_argument("--task", required=True,
                   help="trained task name(s), comma-separated, e.g. rotten_tomatoes,sms_spam")
    p.add_argument("--mode", default=Mode.BAKED.value, choices=[m.value for m in Mode],
                   help="baked: one artifact per task; swappable: one shared backbone + a small adapter per task, "
                        "switched by passing other tensors; shared (ExecuTorch): one backbone weights file (.ptd) + "
                        "a small program per task holding its adapter, each runs at baked speed (generative ones in "
                        "ExecuTorch's own LLM runner) (default: %(default)s)")
    p.add_argument("--adapter-dtype", choices=[d.value for d in AdapterDType],
                   help="swappable mode: how the per-task adapter files store LoRA, recovery and head tensors; the "
                        f"artifacts compute in float32 either way (default: {AdapterDType.FLOAT16.value}, half the "
                        f"bytes; {AdapterDType.FLOAT32.value} over an act:tensor backbone, where float16 rounding "
                        f"fails parity; {AdapterDType.INT8.value}: LoRA and recovery matrices as int8 codes with one "
                        "scale per rank component, the head float16, about a quarter of the float32 bytes). "
                        f"Shared mode (ExecuTorch): the adapter inside each task program, {AdapterDType.FLOAT32.value} "
                        f"(default) or {AdapterDType.INT8.value} (those int8 codes run as XNNPACK int8 linears)")
    p.add_argument("--activations", choices=[a.value for a in Activations],
                   help="ONNX over an int4 backbone: how MatMulNBits computes the backbone linears' activations. "
                        f"{Activations.FLOAT32.value} (default): float, exact against a float reference; "
                        f"{Activations.INT8.value}: int8 per block (accuracy_level 4, as onnxruntime-genai's builder "
                        "emits, what training simulated): faster decoding (classification: no faster on x86), "
                        "validated with the gates for int8 activations that ExecuTorch's programs get. ExecuTorch "
                        "always runs int8, Core ML float32")
    p.add_argument("--attention", choices=[a.value for a in Attention],
                   help=f"classification, ONNX and ExecuTorch: {Attention.FUSED.value} (default) writes each layer's "
                        "self-attention as one com.microsoft MultiHeadAttention node (ONNX Runtime's fused CPU kernel), "
                        "or, for ExecuTorch, attention and norms as XNNPACK operators with the padding mask built once "
                        f"(XNNPACK runs the encoder in few delegate calls); {Attention.OPS.value} keeps the model's "
                        "graph as exported (MatMul, Softmax...; SDPA and norms as portable kernels). Generative graphs "
                        "always use the runtime's own attention (ops is refused for them)")
    p.add_argument("--runs", default="calora_runs", help="where calora-train wrote the tasks (default: %(default)s)")
    p.add_argument("--out", help="bundle directory (default: bundles/TARGET-MODE); an existing one is replaced "
                                 "only if it is a calora bundle and --overwrite is given")
    p.add_argument("--overwrite", action="store_true", help="replace the calora bundle at --out (atomically: the "
                                                            "old one stays until the new one is complete)")
    p.add_argument("--max-length", type=int, help="classification: sequence length of the exported inputs (default: "
                   "as trained); generation: the maximum context, the KV cache size (default: training length "
                   "+ answer budget, rounded up to 64)")
    add_common_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """`calora-export`; returns the exit code (0, 2 bad input, 3 internal error, 130/143 interrupted)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        from calora.train.outputs import OutputKind, check_output

        tasks = [t.strip() for t in args.task.split(",") if t.strip()]
        out = args.out or f"bundles/{args.target}-{args.mode}"
        if args.max_length is not None and not 2 <= args.max_length <= MAX_LENGTH:
            raise ConfigError(f"--max-length {args.max_length}: must be between 2 and {MAX_LENGTH}")
        from calora.targets import get_target

        target = get_target(args.target)
        if Mode(args.mode) not in target.modes:  # refuse before any model is loaded
            raise CaloraError(f"--mode {args.mode}: target {args.target} supports "
                              f"{', '.join(sorted(m.value for m in target.modes))}")
        AdapterDType.check(Mode(args.mode), args.adapter_dtype)  # a dtype the mode cannot store: refused, not ignored
        Activations.check(args.target, args.activations)
        Attention.check(args.target, args.attention)
        if not Path(args.runs).is_dir():
            raise CaloraError(f"--runs {args.runs}: no such folder (where calora-train wrote the tasks)")
        # Before minutes of lowering: never over a user's folder, the runs, or an unwritable place.
        check_output(out, OutputKind.BUNDLE, flag="--out", overwrite=args.overwrite, inputs={"--runs": args.runs})
        from .bundle import export_bundle
        from .job import load_job

        job = load_job(args.runs, tasks, args.mode, args.max_length, args.adapter_dtype, args.activations,
                       args.attention)
        manifest = export_bundle(job, args.target, out, argv)
        print(f"[calora] wrote {out} ({args.target}, {args.mode}, tasks: {', '.join(tasks)})")
        for task in manifest["tasks"]:
            print(f"  {task['name']}: smoke {json.dumps(task['smoke'])}")
        return 0

    return run_cli("calora-export", args, body)


if __name__ == "__main__":
    sys.exit(main())
