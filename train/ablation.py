"""The CA-LoRA results table: one compression mix, every ablation, several seeds.

    python -m calora.train.ablation --task rotten_tomatoes --seeds 0 1 2 --results train/results

Rows: uncompressed + LoRA (teacher), compressed + LoRA from scratch, compressed + inherited LoRA
untrained, compressed + CA-LoRA, and CA-LoRA with each of inherit / recover / distill off.
Model choice never looks at the test split: every variant trains for the same fixed schedule.
Writes ``<results>/ablation_<backbone>_<task>.json`` and ``.md`` with the command, machine, date.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from .cli import build_parser, config_from_args

VARIANTS = {
    "compressed + LoRA from scratch": dict(inherit=False, recover=False, distill=False),
    "compressed + CA-LoRA": dict(inherit=True, recover=True, distill=True),
    "CA-LoRA without inherit": dict(inherit=False, recover=True, distill=True),
    "CA-LoRA without recover": dict(inherit=True, recover=False, distill=True),
    "CA-LoRA without distill": dict(inherit=True, recover=True, distill=False),
}


def _machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU x{torch.get_num_threads()} threads, torch {torch.__version__}"


def _fmt(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m calora.train.ablation"
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--results", default="train/results", help="folder for the .json and .md results")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    from .pipeline import prepare, train_student

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    ctx = prepare(cfg)
    rows: dict[str, dict[str, list]] = {"uncompressed + LoRA (teacher)": {"val": [ctx.teacher_metrics["validation"]["accuracy"]],
                                                                         "test": [ctx.teacher_metrics["test"]["accuracy"]],
                                                                         "f1": [ctx.teacher_metrics["test"]["f1_macro"]]}}
    runs = []
    for name in args.variants:
        for seed in args.seeds:
            settings = dataclasses.replace(cfg.calora, **VARIANTS[name])
            out = train_student(ctx, settings, seed=seed, eval_inherited=seed == args.seeds[0])
            runs.append({"variant": name, "seed": seed, **out})
            row = rows.setdefault(name, {"val": [], "test": [], "f1": []})
            row["val"].append(out["student"]["validation"]["accuracy"])
            row["test"].append(out["student"]["test"]["accuracy"])
            row["f1"].append(out["student"]["test"]["f1_macro"])
            if out.get("inherited_untrained") and seed == args.seeds[0]:
                rows.setdefault("compressed + inherited LoRA, untrained",
                                {"val": [out["inherited_untrained"]["validation"]["accuracy"]],
                                 "test": [out["inherited_untrained"]["test"]["accuracy"]],
                                 "f1": [out["inherited_untrained"]["test"]["f1_macro"]]})
            print(f"[ablation] {name} seed {seed}: test acc {out['student']['test']['accuracy']:.4f}", flush=True)
    order = ["uncompressed + LoRA (teacher)", "compressed + LoRA from scratch",
             "compressed + inherited LoRA, untrained", *[v for v in VARIANTS if v != "compressed + LoRA from scratch"]]
    command = "python -m calora.train.ablation " + shlex.join(argv if argv is not None else sys.argv[1:])
    table = ["| model | val acc (%) | test acc (%) | test macro-F1 (%) | runs |", "|---|---|---|---|---|"]
    for name in order:
        if name in rows:
            r = rows[name]
            table.append(f"| {name} | {_fmt(r['val'])} | {_fmt(r['test'])} | {_fmt(r['f1'])} | {len(r['test'])} |")
    record = {"command": command, "machine": _machine(), "started": started,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "config": cfg.to_dict(),
              "task_record": ctx.task.record, "rows": rows, "runs": runs}
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"ablation_{cfg.backbone.replace('/', '_')}_{cfg.task}_{str(cfg.compression).replace(':', '').replace('+', '_')}"
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    md = [f"# CA-LoRA ablation: {cfg.backbone} on {cfg.task}, compression `{cfg.compression}`", "",
          f"- command: `{command}`", f"- machine: {record['machine']}", f"- date: {started} to {record['finished']}",
          f"- splits: {json.dumps({k: v['examples'] for k, v in ctx.task.record['counts'].items()})} "
          f"({ctx.task.record['split_rule']})",
          f"- compressed backbone: {json.dumps(runs[0]['compression']['size'])} bytes "
          f"(fingerprint {runs[0]['compression']['fingerprint'][:23]}…)",
          f"- seeds: {args.seeds} (mean ± sample std over seeds; the teacher is trained once, seed {cfg.train.seed})",
          "", *table, ""]
    (out_dir / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
