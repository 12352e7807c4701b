"""Int4 group 128 against 32 over seeds 0-2, per task and level: writes summary.md and summary.json beside this file.

Reads the `metrics.json` copies of each `calora-train` run (this folder and ../int4-group for rotten_tomatoes at 4.7x).
Differences are paired by seed (the same seed and teacher for both groups). Run: python summarize.py
"""
import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
SETS = {  # name: (task, level, metric file pattern {g} {s}; metric keys)
    "rotten_tomatoes 4.7x": (HERE.parent / "int4-group", lambda g, s: f"metrics_g{g}" + ("" if s == 0 else f"_seed{s}")),
    "rotten_tomatoes 6.1x": (HERE, lambda g, s: f"metrics_rt61_g{g}_seed{s}"),
    "question_type 4.7x": (HERE, lambda g, s: f"metrics_qt_g{g}_seed{s}"),
    "sms_spam 4.7x": (HERE, lambda g, s: f"metrics_sms_g{g}_seed{s}"),
}
COLUMNS = [("test", "accuracy"), ("test", "f1_macro"), ("validation", "accuracy"), ("validation", "f1_macro")]


def _pm(xs):
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def main():
    rows, record = [], {}
    for name, (folder, stem) in SETS.items():
        got = {g: [json.loads((folder / f"{stem(g, s)}.json").read_text()) for s in (0, 1, 2)
                   if (folder / f"{stem(g, s)}.json").exists()] for g in (32, 128)}
        n = min(len(got[32]), len(got[128]))
        if n == 0:
            continue
        rec = {"seeds": n, "teacher_test_accuracy": 100 * got[32][0]["teacher"]["test"]["accuracy"]}
        cells = []
        for split, key in COLUMNS:
            a = [100 * m["student"][split][key] for m in got[32][:n]]
            b = [100 * m["student"][split][key] for m in got[128][:n]]
            d = [y - x for x, y in zip(a, b)]
            rec[f"{split}_{key}"] = {"g32": a, "g128": b, "g128_minus_g32": d}
            cells.append(f"{_pm(a)} | {_pm(b)} | {' / '.join(f'{x:+.2f}' for x in d)}")
        record[name] = rec
        rows.append(f"| {name} | {n} | {rec['teacher_test_accuracy']:.1f} | " + " | ".join(cells) + " |")
    pooled = {f"{split}_{key}": [d for r in record.values() for d in r[f"{split}_{key}"]["g128_minus_g32"]]
              for split, key in COLUMNS}
    record["pooled g128 - g32"] = {k: {"mean": statistics.mean(v), "sd": statistics.stdev(v), "n": len(v),
                                       "negative": sum(d < 0 for d in v), "positive": sum(d > 0 for d in v)}
                                   for k, v in pooled.items()}
    lines = [f"- {k}: mean {v['mean']:+.2f} ± {v['sd']:.2f} points over {v['n']} task-level-seed pairs "
             f"({v['positive']} above, {v['negative']} below, the rest equal)" for k, v in record["pooled g128 - g32"].items()]
    head = ["| task, level | seeds | teacher test acc | "
            + " | ".join(f"{s} {k} g32 | g128 | g128 - g32 per seed" for s, k in COLUMNS) + " |",
            "|" + "---|" * (3 + 3 * len(COLUMNS))]
    (HERE / "summary.md").write_text("\n".join(["# Int4 group 128 against 32, CA-LoRA in PyTorch (percent)", "",
                                                 "Written by `python summarize.py` from the metrics files.", ""]
                                                + head + rows + ["", "Pooled, group 128 minus 32:", ""] + lines) + "\n")
    (HERE / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    print((HERE / "summary.md").read_text())
    print(plot(record, HERE.parents[2] / "figures" / "int4_group_quality.png"))


def plot(record: dict, dest: Path) -> Path:
    """Seed-paired differences (group 128 minus 32) per task and level, test and validation accuracy."""
    import platform
    import time

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    names = [n for n in record if not n.startswith("pooled")]
    for j, (split, colour) in enumerate((("test", "tab:blue"), ("validation", "tab:orange"))):
        for i, name in enumerate(names):
            d = record[name][f"{split}_accuracy"]["g128_minus_g32"]
            x = i + (j - 0.5) * 0.25
            ax.scatter([x] * len(d), d, color=colour, s=18, label=f"{split}, one seed" if i == 0 else None)
            ax.hlines(statistics.mean(d), x - 0.1, x + 0.1, color=colour, lw=2)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("accuracy, group 128 minus group 32 (points)")
    ax.set_title("CA-LoRA with int4 group 128 against 32, paired by seed (bars: means)", fontsize=10)
    ax.legend(fontsize=8)
    fig.subplots_adjust(bottom=0.22)
    fig.text(0.01, 0.01, "python docs/results/2026-12-07/int4-group-tasks/summarize.py (from run.sh there and "
             f"../int4-group/run.sh)\nCPU-X ({platform.machine()}, 2 cores), training runs 2026-12-07 20:31-23:00 UTC; "
             f"drawn {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", fontsize=6, color="0.35")
    fig.savefig(dest, dpi=130)
    plt.close(fig)
    return dest


if __name__ == "__main__":
    main()
