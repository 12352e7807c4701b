"""What a CA-LoRA training step costs against a plain LoRA step on the same compressed backbone.

Configurations, all on the task's real training texts with the recorded recipe (batch size,
length, learning rate), trained with calora's own loop (`calora.train.trainer.fit`):

- ``lora-uncompressed``: the teacher's recipe (LoRA + head on the fp32 backbone);
- ``lora-compressed``: LoRA from scratch on the compressed backbone (QLoRA-style; the baseline);
- ``lora+recovery``: inherited LoRA + recovery branches, no distillation (what recovery costs);
- ``calora-online``: CA-LoRA as `calora-train` runs it (teacher forward every step);
- ``calora-cached``: CA-LoRA with ``--teacher-outputs cache`` (teacher outputs computed once);
- ``calora-online-bf16``: the online teacher with ``--teacher-precision bf16`` (its linear layers
  in bfloat16 under autocast; the student still trains in float32).

Each round trains every configuration for ``--steps`` optimizer steps (after ``--warmup`` steps
that are not timed), interleaved round by round in one process; the figure per configuration is
the median over rounds of seconds per step. The cached teacher's one-off fill is timed on the
same examples and reported per example, against the online teacher's per-step extra cost.
Generative tasks train with their own objective (KL to the teacher) and have no cached
configuration (`calora-train` refuses ``--teacher-outputs cache`` for them).

    python -m benchmarks.train_step --runs calora_runs --task rotten_tomatoes \\
        --out benchmarks/results/train_step_minilm_rt_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import provenance, write_results


def _subset(dataset, n: int):
    """The first `n` examples of an encoded split (indices restart at 0: the cache keys by them)."""
    sub = copy.copy(dataset)
    sub.input_ids, sub.labels = dataset.input_ids[:n], dataset.labels[:n]
    return sub


def _context(runs: Path, task: str, backbone: str, scratch: Path):
    """The task's recorded run (compression, recipe) with its teacher imported into `scratch` (the
    runs folder is only read: a teacher recipe that differed in any field would otherwise be retrained
    into it)."""
    from calora.train.artifacts import read_json
    from calora.train.config import GenerationSettings, RunConfig, TrainSettings
    from calora.train.pipeline import prepare
    from calora.train.spec import CompressionSpec

    rec = read_json(runs / task / "calora" / "calora_config.json")
    t = rec["train"]
    # prepare() evaluates the imported teacher; that is neither timed nor used here, so it sees few
    # examples (a generative teacher's greedy evaluation would otherwise take minutes)
    train = TrainSettings(epochs=1, batch_size=t["batch_size"], lr=t["lr"], max_length=t["max_length"],
                          seed=t["seed"], checkpoint_every=0, max_train_examples=t.get("max_train_examples"),
                          max_eval_examples=16)
    gen = rec["task"].get("generation") or {}
    cfg = RunConfig(backbone=backbone or rec["backbone"]["source"], task=task, out=str(scratch),
                    kind=rec["task"].get("kind", "classify"),
                    generation=GenerationSettings(max_response_tokens=gen.get("max_response_tokens", 32),
                                                  eval_generate_examples=2),
                    teacher=str(runs / task / "teacher"),
                    compression=CompressionSpec.from_dict(rec["compression"]["spec"]), train=train)
    return prepare(cfg), rec


def _models(ctx) -> dict[str, tuple]:
    """name -> (model, teacher or None, CALoRASettings or None)."""
    from calora.train.config import CALoRASettings, TeacherOutputs, TeacherPrecision
    from calora.train.pipeline import _set_trainable, build_student

    seed = ctx.cfg.train.seed
    teacher_copy = copy.deepcopy(ctx.teacher)
    _set_trainable(teacher_copy)
    plain = CALoRASettings(inherit=False, recover=False, distill=False)
    recover = CALoRASettings(distill=False)
    online = CALoRASettings()
    cached = CALoRASettings(teacher_outputs=TeacherOutputs.CACHE)
    bf16 = CALoRASettings(teacher_precision=TeacherPrecision.BF16)
    models = {
        "lora-uncompressed": (teacher_copy, None, None),
        "lora-compressed": (build_student(ctx, plain, seed)[0], None, plain),
        "lora+recovery": (build_student(ctx, recover, seed)[0], None, recover),
        "calora-online": (build_student(ctx, online, seed)[0], ctx.teacher, online),
        "calora-cached": (build_student(ctx, cached, seed)[0], ctx.teacher, cached),
        "calora-online-bf16": (build_student(ctx, bf16, seed)[0], ctx.teacher, bf16),
    }
    if ctx.cfg.kind == "generate":  # no teacher cache for generation: [tokens x vocab] logits
        del models["calora-cached"]
    return models


def _fill_seconds(ctx, data, batch_size: int) -> float:
    from calora.train.config import TeacherOutputs
    from calora.train.teacher_targets import TeacherTargets

    # the device the teacher was left on by the timed fits (a GPU host's), as calora-train fills it
    device = next(ctx.teacher.parameters()).device
    targets = TeacherTargets(ctx.teacher, TeacherOutputs.CACHE, device, contextlib.nullcontext)
    t0 = time.perf_counter()
    targets.fill(data, batch_size, show=False)
    return time.perf_counter() - t0


def _cache_fill(med: dict, fills: list[float], examples: int, batch_size: int) -> dict:
    online_extra = med["calora-online"] - med["calora-cached"]
    fill_per_example = statistics.median(fills) / examples
    return {"median_s": statistics.median(fills), "examples": examples, "s_per_example": fill_per_example,
            "online_teacher_extra_s_per_example": online_extra / batch_size,
            "fill_vs_online_per_example": fill_per_example / (online_extra / batch_size) if online_extra > 0 else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("calora_runs"))
    ap.add_argument("--task", default="rotten_tomatoes")
    ap.add_argument("--backbone", help="default: the backbone the task was trained on")
    ap.add_argument("--steps", type=int, default=12, help="timed optimizer steps per configuration and round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch

    from calora.train.trainer import fit

    with tempfile.TemporaryDirectory() as tmp:
        ctx, rec = _context(args.runs, args.task, args.backbone, Path(tmp) / "runs")
        settings = ctx.cfg.train
        data = _subset(ctx.sets["train"], args.steps * settings.batch_size)
        models = _models(ctx)
        per_step: dict[str, list[float]] = {k: [] for k in models}
        fills: list[float] = []
        for r in range(args.rounds):
            for name, (model, teacher, calora) in models.items():
                # warm-up steps, untimed; then the timed steps on the same examples
                fit(model, _subset(data, args.warmup * settings.batch_size), dataclasses.replace(settings, epochs=1),
                    Path(tmp) / name, teacher=teacher, calora=calora, desc=f"{name} warm-up",
                    objective=ctx.kind.objective)
                res = fit(model, data, dataclasses.replace(settings, epochs=1), Path(tmp) / name, teacher=teacher,
                          calora=calora, desc=name, objective=ctx.kind.objective)
                per_step[name].append(res.seconds / res.steps)
                print(f"round {r + 1}/{args.rounds} {name:<18} {1e3 * res.seconds / res.steps:8.1f} ms/step "
                      f"({res.steps} steps)", flush=True)
            if "calora-cached" in models:
                fills.append(_fill_seconds(ctx, data, settings.eval_batch_size))
    med = {k: statistics.median(v) for k, v in per_step.items()}
    base = med["lora-compressed"]
    rows = [{"config": k, "median_s_per_step": v, "x_lora_compressed": v / base, "rounds_s_per_step": per_step[k]}
            for k, v in med.items()]
    record = {
        **provenance("benchmarks.train_step", argv),
        "torch": f"{torch.__version__}, {torch.get_num_threads()} threads",
        "task": args.task, "backbone": rec["backbone"]["source"], "compression": rec["compression"]["text"],
        "batch_size": settings.batch_size, "max_length": settings.max_length, "steps": args.steps,
        "rounds": args.rounds, "rows": rows,
        "cache_fill": _cache_fill(med, fills, len(data), settings.batch_size) if fills else None,
    }
    print(f"\n{'config':<18} {'ms/step':>8} {'x LoRA (compressed)':>20}")
    for row in rows:
        print(f"{row['config']:<18} {1e3 * row['median_s_per_step']:8.1f} {row['x_lora_compressed']:20.2f}")
    if fills:
        fill = record["cache_fill"]
        print(f"cache fill: {1e3 * fill['s_per_example']:.2f} ms/example; online teacher extra: "
              f"{1e3 * fill['online_teacher_extra_s_per_example']:.2f} ms/example")
    write_results(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
