"""The CA-LoRA results table: one compression mix, every ablation, several seeds.

    python -m calora.train.ablation --task rotten_tomatoes --seeds 0 1 2 --results train/results

Rows: uncompressed + LoRA (teacher), compressed + LoRA from scratch, compressed + LoftQ-initialised
LoRA (a published stronger baseline, `train/loftq.py`), compressed + inherited LoRA
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
    "compressed + LoftQ-initialised LoRA": dict(inherit=False, recover=False, distill=False, loftq=True),
    "compressed + CA-LoRA": dict(inherit=True, recover=True, distill=True),
    "CA-LoRA without inherit": dict(inherit=False, recover=True, distill=True),
    "CA-LoRA without recover": dict(inherit=True, recover=False, distill=True),
    "CA-LoRA without distill": dict(inherit=True, recover=True, distill=False),
}
#: Scored, not trained: the teacher's LoRA on the compressed backbone as inherited. Every variant
#: that inherits scores it on the way; naming it alone evaluates it without training anything.
INHERITED = "compressed + inherited LoRA, untrained"


def _machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU x{torch.get_num_threads()} threads, torch {torch.__version__}"


def _get(metrics: dict, split: str, key: str):
    node = metrics.get(split, {})
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _value(metrics: dict, split: str, key: str, percent: bool) -> str:
    v = _get(metrics, split, key)
    return "n/a" if v is None else f"{100 * v:.1f}" if percent else f"{v:.3g}"


def _fmt(values: list[float], percent: bool = True) -> str:
    if not values:
        return "n/a"
    k = 100 if percent else 1
    if len(values) == 1:
        return f"{k * values[0]:.1f}" if percent else f"{values[0]:.4g}"
    return f"{k * statistics.mean(values):.1f} ± {k * statistics.stdev(values):.1f}" if percent else \
        f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m calora.train.ablation"
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=[*VARIANTS, INHERITED], default=list(VARIANTS),
                        help=f"rows to train (default: all but '{INHERITED}', which every inheriting variant "
                             "scores on the way; name it to score it alone, without training)")
    parser.add_argument("--results", default="train/results", help="folder for the .json and .md results")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    from .pipeline import prepare, score_inherited, train_student

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    ctx = prepare(cfg)
    columns = ctx.kind.columns
    rows: dict[str, list[dict]] = {"uncompressed + LoRA (teacher)": [ctx.teacher_metrics]}
    runs = []
    for name in args.variants:
        if name == INHERITED:
            if INHERITED not in rows:
                out = score_inherited(ctx)
                runs.append({"variant": name, "seed": None, **out})
                rows[INHERITED] = [out["student"]]
            continue
        for seed in args.seeds:
            settings = dataclasses.replace(cfg.calora, **VARIANTS[name])
            # The inherited, untrained LoRA is the same model for every variant: score it once.
            once = seed == args.seeds[0] and INHERITED not in rows
            out = train_student(ctx, settings, seed=seed, eval_inherited=once)
            runs.append({"variant": name, "seed": seed, **out})
            rows.setdefault(name, []).append(out["student"])
            if out.get("inherited_untrained") and once:
                rows.setdefault(INHERITED, [out["inherited_untrained"]])
            print(f"[ablation] {name} seed {seed}: " + ", ".join(
                f"{h} {_value(out['student'], split, key, pct)}" for h, split, key, pct in columns), flush=True)
    order = ["uncompressed + LoRA (teacher)", "compressed + LoRA from scratch", "compressed + LoftQ-initialised LoRA",
             INHERITED, *[v for v in VARIANTS if v not in ("compressed + LoRA from scratch",
                                                           "compressed + LoftQ-initialised LoRA")]]
    command = "python -m calora.train.ablation " + shlex.join(argv if argv is not None else sys.argv[1:])
    table = ["| model | " + " | ".join(h for h, *_ in columns) + " | runs |", "|---|" + "---|" * (len(columns) + 1)]
    for name in order:
        if name in rows:
            cells = [_fmt([_get(m, split, key) for m in rows[name] if _get(m, split, key) is not None], pct)
                     for _, split, key, pct in columns]
            table.append(f"| {name} | " + " | ".join(cells) + f" | {len(rows[name])} |")
    record = {"command": command, "machine": _machine(), "started": started,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "config": cfg.to_dict(),
              "task_record": ctx.task.record, "rows": rows, "runs": runs}
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"ablation_{cfg.backbone.replace('/', '_')}_{cfg.task}_{str(cfg.compression).replace(':', '').replace('+', '_')}"
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    limits = cfg.train
    md = [f"# CA-LoRA ablation: {cfg.backbone} on {cfg.task} ({cfg.kind}), compression `{cfg.compression}`", "",
          f"- command: `{command}`", f"- machine: {record['machine']}", f"- date: {started} to {record['finished']}",
          f"- splits: {json.dumps({k: v['examples'] if isinstance(v, dict) else v for k, v in ctx.task.record['counts'].items()})} "
          f"({ctx.task.record['split_rule']})",
          f"- compressed backbone: {json.dumps(runs[0]['compression']['size'])} bytes "
          f"(fingerprint {runs[0]['compression']['fingerprint'][:23]}…)",
          f"- seeds: {args.seeds} (mean ± sample std over seeds; the teacher is trained once, seed {cfg.train.seed})",
          f"- schedule: {limits.epochs:g} epoch(s) over {limits.max_train_examples or 'all'} training examples, batch "
          f"{limits.batch_size}, lr {limits.lr:g}, max length {limits.max_length}; evaluated on "
          f"{limits.max_eval_examples or 'all'} examples per split; fixed schedule, nothing tuned on the test split",
          "", *table, ""]
    (out_dir / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
