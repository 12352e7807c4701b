"""PNG figures for docs/RESULTS.md, drawn from committed results files (never from fresh numbers).

Each figure carries, under its plot, the command, machine and date of the run that produced the
numbers, read from the results file itself.

    python -m benchmarks.plots --out docs/figures \\
        --ablation train/results/ablation_minilm_rotten_tomatoes_int4g32_sparse0.5_embint8.json \\
        --latency benchmarks/results/classify_latency_minilm_rt_cpu.json \\
        --decode benchmarks/results/gen_decode_smollm2_cpu.json \\
        --tradeoff benchmarks/results/gen_decode_smollm2_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import textwrap
from pathlib import Path


def _figure(width: float = 8.0, height: float = 4.2):
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a CI host
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height))


def _footer(fig, record: dict) -> None:
    when = record.get("date") or record.get("started", "")
    text = f"{record.get('command', '')}\n{record.get('machine', '')}, {when}"
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(text, 150)), fontsize=6, va="bottom", color="0.35")


def _save(plt, fig, record: dict, dest: Path) -> Path:
    """Footer (command, machine, date of the results file), write the PNG, free the figure."""
    _footer(fig, record)
    fig.savefig(dest, dpi=130)
    plt.close(fig)
    return dest


def _test_values(metrics, key: str) -> list[float]:
    """Test-split values of one row: the current format (a list of metric dicts per row) and the
    first ablation files' format (a dict of per-seed lists)."""
    if isinstance(metrics, dict):
        return [float(v) for v in metrics.get("test", [])]
    return [float(m["test"][key]) for m in metrics if m.get("test", {}).get(key) is not None]


def _short(config: str) -> str:
    """A latency row's label without what every calora row shares (the name, the int4 linears)."""
    return config.replace("calora ", "").replace("int4:g32+sparse:0.5+", "")


def ablation(path: Path, out: Path) -> Path:
    record = json.loads(path.read_text())
    kind = record.get("config", {}).get("kind", "classify")
    key = "exact_match" if kind == "generate" else "accuracy"
    names, means, errs = [], [], []
    for name, metrics in record["rows"].items():
        vals = _test_values(metrics, key)
        if vals:
            names.append(name)
            means.append(100 * statistics.mean(vals))
            errs.append(100 * statistics.stdev(vals) if len(vals) > 1 else 0.0)
    plt, fig, ax = _figure()
    ax.barh(names[::-1], means[::-1], xerr=errs[::-1], color="#4c72b0")
    for i, m in enumerate(means[::-1]):
        ax.text(m + 0.3, i, f"{m:.1f}", va="center", fontsize=8)
    lo = min(means) - 5
    ax.set_xlim(max(0, lo), max(means) + 3)
    cfg = record.get("config", {})
    ax.set_xlabel(f"test {key.replace('_', ' ')} (%), mean ± std over seeds")
    spec = cfg.get("compression")
    if isinstance(spec, dict):
        from calora.train.spec import CompressionSpec

        spec = str(CompressionSpec.from_dict(spec))
    ax.set_title(f"{cfg.get('backbone', '')} on {cfg.get('task', '')}, compression {spec}", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.subplots_adjust(left=0.36, bottom=0.2)
    return _save(plt, fig, record, out / f"{path.stem}.png")


def latency(path: Path, out: Path) -> Path:
    record = json.loads(path.read_text())
    rows = record["rows"]
    plt = _figure()[0]
    plt.close("all")
    height = 2.2 + 0.28 * len(rows)
    names = [_short(r["config"]) for r in rows][::-1]
    label_in = 0.065 * max(len(n) for n in names)  # inches the longest label needs at fontsize 8
    width = max(12.0, label_in / 0.3)  # the labels keep 30% of the figure's width, the bars the rest
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(width, height))
    ax1.barh(names, [r["median_ms"] for r in rows][::-1], color="#dd8452")
    for i, r in enumerate(rows[::-1]):
        acc = f", acc {100 * r['accuracy']:.1f}%" if r.get("accuracy") is not None else ""
        ax1.text(r["median_ms"], i, f" {r['median_ms']:.2f} ms ({r['x_alternative']:.2f}x alt){acc}", va="center",
                 fontsize=7)
    ax1.set_xlabel(f"median latency per example, batch 1, {record['length']} tokens (ms)")
    ax1.set_xlim(0, max(r["median_ms"] for r in rows) * 1.9)
    ax2.barh(names, [r["model_bytes"] / 1e6 for r in rows][::-1], color="#55a868", label="model / backbone")
    ax2.barh(names, [r["adapter_bytes"] / 1e6 for r in rows][::-1], left=[r["model_bytes"] / 1e6 for r in rows][::-1],
             color="#c44e52", label="per-task adapter")
    ax2.set_xlabel("file size (MB)")
    ax2.set_yticklabels([])
    ax2.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{record['task']}: latency and size per artifact", fontsize=10)
    ax1.tick_params(axis="y", labelsize=8)
    fig.subplots_adjust(left=0.3, bottom=1.15 / height, wspace=0.05)  # room for the axis label and the footer
    return _save(plt, fig, record, out / f"{path.stem}.png")


def decode(path: Path, out: Path) -> Path:
    record = json.loads(path.read_text())
    rows = record["rows"]
    names = [f"{r.get('bundle', r['runtime'])}: {r['variant']}" for r in rows][::-1]
    longest = max(len(n) for n in names)
    plt, fig, ax = _figure(width=max(8.0, 4.0 + 0.075 * longest))  # room for the bundle paths
    ax.barh(names, [r["decode_tokens_per_s"] for r in rows][::-1], color="#8172b3")
    for i, r in enumerate(rows[::-1]):
        ppl = f"  (perplexity {r['perplexity']:.1f})" if "perplexity" in r else ""
        ax.text(r["decode_tokens_per_s"], i, f" {r['decode_tokens_per_s']:.1f}{ppl}", va="center", fontsize=8)
    ax.set_xlim(0, max(r["decode_tokens_per_s"] for r in rows) * 1.45)
    ax.set_xlabel(f"decode tokens/s (median, batch 1, greedy, {record['new_tokens']} new tokens)")
    threads = record.get("threads")  # recorded since 2026-12-06: runtimes' defaults differ
    ax.set_title(f"{record['task']}: generation speed per runtime"
                 + (f", {threads} intra-op threads each" if isinstance(threads, int) else
                    f", {threads}" if threads else ""), fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.subplots_adjust(left=min(0.6, 0.075 * longest / fig.get_figwidth() + 0.03), bottom=0.26)
    return _save(plt, fig, record, out / f"{path.stem}.png")


def _group(row: dict) -> str:
    """A calora bundle is named after its runtime (executorch-..., onnx-...): those group by runtime;
    every other row (PyTorch eager, the do-it-yourself model) is its own group."""
    bundle = row.get("bundle", row["runtime"])
    return row["runtime"] if bundle.startswith(row["runtime"]) else bundle


def _labels(rows: list[dict]) -> list[str]:
    """Short point labels: within one group, each bundle name without the prefix the group's
    bundles share ("base" for the bundle that is the prefix itself)."""
    import os

    names: dict[str, list[str]] = {}
    for r in rows:
        names.setdefault(_group(r), []).append(r.get("bundle", r["runtime"]))
    labels = []
    for r in rows:
        mine, name = names[_group(r)], r.get("bundle", r["runtime"])
        prefix = os.path.commonprefix(mine) if len(mine) > 1 else ""
        labels.append(f"{name[len(prefix):].lstrip('-') or 'base'}" if prefix else name)
    return labels


def _frontier(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both decode speed and perplexity, slowest first."""
    best, front = float("inf"), []
    for r in sorted(rows, key=lambda r: -r["decode_tokens_per_s"]):
        if r["perplexity"] < best:
            best = r["perplexity"]
            front.append(r)
    return front[::-1]


def tradeoff(path: Path, out: Path) -> Path:
    """Generation speed against quality: decode tokens/s (x) and held-out perplexity (y, lower is
    better) of every configuration in one benchmarks.gen_decode file that was scored, one line per
    runtime through its best trade-offs (no other of its configurations is both faster and better),
    and an inset that spreads calora's cluster out; the marker area is the bytes the runtime loads.
    Rows without a perplexity are left out."""
    record = json.loads(path.read_text())
    rows = [r for r in record["rows"] if "perplexity" in r]
    if not rows:
        raise ValueError(f"{path}: no row has a perplexity (run benchmarks.gen_decode with --quality-examples)")
    plt, fig, ax = _figure(width=9.0, height=6.0)
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    groups = list(dict.fromkeys(_group(r) for r in rows))
    color = {g: palette[i % len(palette)] for i, g in enumerate(groups)}
    labels = dict(zip(map(id, rows), _labels(rows)))
    biggest = max(r["bytes"] for r in rows)
    calora = [r for r in rows if _group(r) == r["runtime"]]
    inset = ax.inset_axes([0.05, 0.45, 0.5, 0.5]) if len(calora) > 2 else None

    # Labels point away from the neighbouring runtime: the slowest runtime's to the left, the others' to the right.
    speed = {g: statistics.mean(r["decode_tokens_per_s"] for r in calora if _group(r) == g)
             for g in dict.fromkeys(_group(r) for r in calora)}
    slowest = min(speed, key=speed.get) if len(speed) > 1 else None

    def draw(axes, mine_rows, annotate):
        for g in groups:
            mine = sorted((r for r in mine_rows if _group(r) == g), key=lambda r: r["decode_tokens_per_s"])
            if not mine:
                continue
            xs, ys = [r["decode_tokens_per_s"] for r in mine], [r["perplexity"] for r in mine]
            front = _frontier(mine)
            if len(front) > 1:  # the runtime's best trade-offs; a line through every point would zigzag
                axes.plot([r["decode_tokens_per_s"] for r in front], [r["perplexity"] for r in front], color=color[g],
                          alpha=0.4, linewidth=1)
            axes.scatter(xs, ys, s=[40 + 260 * r["bytes"] / biggest for r in mine], color=color[g], alpha=0.8,
                         edgecolors="black", linewidths=0.5, label=g if axes is ax else None)
            side = -1 if g == slowest else 1
            for k, r in enumerate(mine if annotate else []):
                # alternate above/below so neighbouring configurations stay readable
                axes.annotate(f"{labels[id(r)]}, {r['bytes'] / 1e6:.0f} MB", (r["decode_tokens_per_s"], r["perplexity"]),
                              textcoords="offset points", xytext=(7 * side, 6 if k % 2 else -10), fontsize=6.5,
                              ha="left" if side > 0 else "right")

    outside = [r for r in rows if inset is None or r not in calora]
    draw(ax, rows, annotate=False)
    for r in outside:
        ax.annotate(f"{labels[id(r)]}, {r['bytes'] / 1e6:.0f} MB", (r["decode_tokens_per_s"], r["perplexity"]),
                    textcoords="offset points", xytext=(6, 6), fontsize=7)
    if inset is not None:
        draw(inset, calora, annotate=True)
        xs, ys = [r["decode_tokens_per_s"] for r in calora], [r["perplexity"] for r in calora]
        span = max(xs) - min(xs)  # room for labels on both sides
        inset.set_xlim(min(xs) - 0.35 * span - 1, max(xs) + 0.35 * span + 1)
        inset.set_ylim(min(ys) - 0.12 * (max(ys) - min(ys)) - 0.05, max(ys) + 0.12 * (max(ys) - min(ys)) + 0.05)
        inset.tick_params(labelsize=7)
        inset.set_title("calora's configurations", fontsize=8)
        ax.indicate_inset_zoom(inset, edgecolor="0.5")
    ax.legend(fontsize=8, loc="center right", markerscale=0.5)
    ax.set_xlim(0, max(r["decode_tokens_per_s"] for r in rows) * 1.35)
    ax.set_xlabel(f"decode tokens/s (median, batch 1, greedy, {record['new_tokens']} new tokens; right is faster)")
    ax.set_ylabel(f"perplexity, {record.get('perplexity_examples', '?')} held-out (lower is better)")
    threads = record.get("threads")
    ax.set_title(f"{record['task']}: speed against quality" + (f", {threads} intra-op threads each"
                                                               if isinstance(threads, int) else ""), fontsize=10)
    footer_lines = len(textwrap.wrap(f"{record.get('command', '')}", 150)) + 1
    fig.subplots_adjust(bottom=0.1 + 0.018 * footer_lines)
    return _save(plt, fig, record, out / f"{path.stem}_tradeoff.png")


def task_switch(path: Path, out: Path) -> Path:
    """Per runtime: switching tasks on a swappable bundle (adapter file read, or already in memory)
    against loading the other task's baked model, log scale."""
    record = json.loads(path.read_text())
    rows = record["rows"]
    plt, fig, ax = _figure(8.5, 3.6)
    labels, values, colors = [], [], []

    def name(r: dict) -> str:
        return r["target"] + (f" ({r['api']} API)" if "api" in r else "")

    for r in rows:
        for label, key, color in (("reload the other baked model", "reload_ms", "#c44e52"),
                                  ("reload, old model freed later", "reload_open_ms", "#dd8452"),
                                  ("swappable: adapter file read + activated", "switch_cold_ms", "#4c72b0"),
                                  ("swappable: file, old adapter freed later", "switch_open_ms", "#8172b2"),
                                  ("swappable: adapter already in memory", "switch_warm_ms", "#55a868")):
            if key not in r:  # results files from before the switch was timed in parts
                continue
            labels.append(f"{name(r)}: {label}")
            values.append(max(r[key], 1e-4))
            colors.append(color)
    ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    for i, v in enumerate(values[::-1]):
        ax.text(v, i, f" {v:.3g} ms", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(min(values) / 2, max(values) * 20)
    ax.set_xlabel("time to switch tasks (ms, median, log scale)")
    ratios = ", ".join(f"{name(r)} {r['x_reload_over_switch_cold']:.0f}x"
                       + (f" ({r['x_reload_open_over_switch_open']:.0f}x freeing later)"
                          if "x_reload_open_over_switch_open" in r else "") for r in rows)
    ax.set_title(f"task switch vs model reload, reload / adapter switch:\n{ratios}", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    fig.subplots_adjust(left=0.42, bottom=0.25)
    return _save(plt, fig, record, out / f"{path.stem}.png")


def train_step(path: Path, out: Path) -> Path:
    """Seconds per optimizer step of each training configuration, relative to LoRA on the compressed model."""
    record = json.loads(path.read_text())
    rows = record["rows"]
    plt, fig, ax = _figure(8.0, 3.4)
    names = [r["config"] for r in rows][::-1]
    ax.barh(names, [1e3 * r["median_s_per_step"] for r in rows][::-1], color="#937860")
    for i, r in enumerate(rows[::-1]):
        ax.text(1e3 * r["median_s_per_step"], i, f" {1e3 * r['median_s_per_step']:.0f} ms ({r['x_lora_compressed']:.2f}x)",
                va="center", fontsize=8)
    ax.set_xlim(0, 1e3 * max(r["median_s_per_step"] for r in rows) * 1.35)
    ax.set_xlabel(f"ms per optimizer step (median; batch {record['batch_size']}, length {record['max_length']})")
    ax.set_title(f"training-step cost on {record['task']} ({record['compression']})", fontsize=10)
    fig.subplots_adjust(left=0.22, bottom=0.27)
    return _save(plt, fig, record, out / f"{path.stem}.png")


def levels(specs: list[str], out: Path, name: str = "quality_by_level") -> Path:
    """Grouped bars per compression level: teacher, LoRA from scratch, LoftQ, CA-LoRA. Each spec is
    LABEL=ABLATION_JSON,METRICS_JSON[,SEEDS_JSON]: the baselines from an ablation file, CA-LoRA (and
    the teacher) from the calora-train run's metrics.json of the same level; an optional ablation
    file of more seeds adds its LoRA-from-scratch and CA-LoRA runs (bars: mean, whiskers: std)."""
    import numpy as np

    groups, records = [], []
    rows = ["uncompressed + LoRA (teacher)", "compressed + LoRA from scratch", "compressed + LoftQ-initialised LoRA",
            "compressed + CA-LoRA"]
    for spec in specs:
        label, _, files = spec.partition("=")
        abl_path, metrics_path, *more = files.split(",")
        record = json.loads(Path(abl_path).read_text())
        metrics = json.loads(Path(metrics_path).read_text())
        vals = {r: _test_values(record["rows"][r], "accuracy") for r in rows[:3] if r in record["rows"]}
        vals["compressed + CA-LoRA"] = [metrics["student"]["test"]["accuracy"]]
        for extra in more:
            seeds = json.loads(Path(extra).read_text())
            for r in ("compressed + LoRA from scratch", "compressed + CA-LoRA"):
                vals[r] = vals.get(r, []) + _test_values(seeds["rows"].get(r, []), "accuracy")
            records.append(seeds)
        groups.append((label, vals))
        records.append(record)
    plt, fig, ax = _figure(9.0, 6.0)  # room for the footer: one command per results file
    width = 0.2
    x = np.arange(len(groups))
    for i, row in enumerate(rows):
        ys = [100 * statistics.mean(g[1][row]) if g[1].get(row) else float("nan") for g in groups]
        errs = [100 * statistics.stdev(g[1][row]) if len(g[1].get(row, [])) > 1 else 0.0 for g in groups]
        bars = ax.bar(x + (i - 1.5) * width, ys, width, yerr=errs, capsize=3, label=row)
        for b, y, g in zip(bars, ys, groups):
            n = len(g[1].get(row, []))
            ax.text(b.get_x() + b.get_width() / 2, y + 0.15, f"{y:.1f}" + (f"\n(n={n})" if n > 1 else ""),
                    ha="center", fontsize=7)
    ax.set_xticks(x, [g[0] for g in groups])
    flat = [100 * v for g in groups for vs in g[1].values() for v in vs]
    ax.set_ylim(min(flat) - 2, max(flat) + 2.5)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    cfg = records[0].get("config", {})
    ax.set_title(f"{cfg.get('backbone', '')} on {cfg.get('task', '')}: accuracy by compression level", fontsize=10)
    fig.subplots_adjust(bottom=0.36)
    record = {"command": " ; ".join(r["command"] for r in records) + " ; CA-LoRA seed 0: calora-train (metrics.json)",
              "machine": records[0].get("machine", ""), "date": records[0].get("started", "")}
    return _save(plt, fig, record, out / f"{name}.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    ap.add_argument("--ablation", nargs="*", type=Path, default=[])
    ap.add_argument("--latency", nargs="*", type=Path, default=[])
    ap.add_argument("--decode", nargs="*", type=Path, default=[])
    ap.add_argument("--tradeoff", nargs="*", type=Path, default=[],
                    help="benchmarks.gen_decode files: decode speed against perplexity")
    ap.add_argument("--task-switch", nargs="*", type=Path, default=[])
    ap.add_argument("--train-step", nargs="*", type=Path, default=[])
    ap.add_argument("--levels", nargs="*", default=[], metavar="LABEL=ABLATION_JSON,METRICS_JSON",
                    help="one grouped figure: baselines from the ablation file, CA-LoRA from metrics.json")
    ap.add_argument("--levels-name", default="quality_by_level")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.levels:
        print(levels(args.levels, args.out, args.levels_name))
    for fn, paths in ((ablation, args.ablation), (latency, args.latency), (decode, args.decode), (tradeoff, args.tradeoff),
                      (task_switch, args.task_switch), (train_step, args.train_step)):
        for p in paths:
            print(fn(p, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
