"""SmolLM2-135M rotten_tomatoes classifier, int4 group 64 against 32: writes summary.md and summary.json here.

Quality: CA-LoRA in PyTorch per seed (seed 0 from 2026-12-07: group 32 is the 5.7x run of ../../2026-12-07/et-xnnpack-graph,
group 64 the `smol` stage of ../../2026-12-07/int4-group-tasks; seeds 1-2 from this folder's `run.sh seeds`), paired by seed
(same imported teacher). Speed: the two timing runs of the seed-0 programs beside the alternative, each round's time divided
by the alternative's (and group 64's by group 32's) in the same round. Run: python summarize.py
"""
import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
DAY7 = HERE.parent.parent / "2026-12-07"
SEED0 = {32: DAY7 / "et-xnnpack-graph/train_smollm2_metrics.json", 64: DAY7 / "int4-group-tasks/metrics_smol_g64.json"}
TIMINGS = {"run 1 (2026-12-07)": DAY7 / "int4-group-tasks/classify_latency_smol_g64.json",
           "run 2 (2026-12-08)": HERE / "classify_latency_smol_g64_run2.json",
           "run 3 (2026-12-08)": HERE / "classify_latency_smol_g64_run3.json"}
COLUMNS = [("test", "accuracy"), ("validation", "accuracy")]


def _metrics(g: int, s: int):
    path = SEED0[g] if s == 0 else HERE / f"metrics_g{g}_seed{s}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _pm(xs):
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def _timing(path: Path) -> dict:
    rows = {r["config"]: r for r in json.loads(path.read_text())["rows"]}
    alt = rows.pop("alternative-ort-int8")
    g = {k: next(r for n, r in rows.items() if f"int4:g{k}+" in n) for k in (32, 64)}
    med = statistics.median
    out = {f"g{k}": {"x_alternative": r["median_ms"] / alt["median_ms"], "median_ms": r["median_ms"],
                     "paired_x_alternative": med([a / b for a, b in zip(r["rounds_ms"], alt["rounds_ms"])]),
                     "accuracy": 100 * r["accuracy"], "mb": r["model_bytes"] / 1e6} for k, r in g.items()}
    out["alternative"] = {"median_ms": alt["median_ms"], "rounds_ms": [min(alt["rounds_ms"]), max(alt["rounds_ms"])],
                          "accuracy": 100 * alt["accuracy"], "mb": alt["model_bytes"] / 1e6}
    q = [a / b for a, b in zip(g[64]["rounds_ms"], g[32]["rounds_ms"])]
    out["g64_over_g32_paired"] = {"median": med(q), "faster_rounds": sum(x < 1 for x in q), "rounds": len(q)}
    return out


def main():
    seeds = [s for s in (0, 1, 2) if _metrics(32, s) and _metrics(64, s)]
    record = {"seeds": seeds, "quality": {}, "timing": {}}
    lines = ["# SmolLM2-135M rotten_tomatoes: int4 group 64 against 32 (`int4:g{32,64}+sparse:0.5+emb:int8`)", "",
             f"CA-LoRA in PyTorch, accuracy (%), seeds {', '.join(map(str, seeds))}, the same imported teacher "
             "(written by summarize.py)", "",
             "| split | group 32 | group 64 | group 64 minus 32 per seed |", "|---|---|---|---|"]
    for split, key in COLUMNS:
        a = [100 * _metrics(32, s)["student"][split][key] for s in seeds]
        b = [100 * _metrics(64, s)["student"][split][key] for s in seeds]
        d = [y - x for x, y in zip(a, b)]
        record["quality"][split] = {"g32": a, "g64": b, "g64_minus_g32": d}
        lines.append(f"| {split} | {_pm(a)} | {_pm(b)} | {' / '.join(f'{x:+.2f}' for x in d)} |")
    lines += ["", "Seed-0 programs (baked ExecuTorch) beside the alternative, 7 rounds x 100 examples each run", "",
              "| run | group 32 x alt (paired) | group 64 x alt (paired) | group 64 / group 32 paired (faster rounds) "
              "| alternative ms, median (rounds) |", "|---|---|---|---|---|"]
    for name, path in TIMINGS.items():
        if not path.exists():
            continue
        t = record["timing"][name] = _timing(path)
        p = t["g64_over_g32_paired"]
        lines.append(f"| {name} | {t['g32']['x_alternative']:.2f}x ({t['g32']['paired_x_alternative']:.2f}x) | "
                     f"{t['g64']['x_alternative']:.2f}x ({t['g64']['paired_x_alternative']:.2f}x) | "
                     f"{p['median']:.2f}x ({p['faster_rounds']} of {p['rounds']}) | {t['alternative']['median_ms']:.1f} "
                     f"({t['alternative']['rounds_ms'][0]:.1f}-{t['alternative']['rounds_ms'][1]:.1f}) |")
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    (HERE / "summary.json").write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
