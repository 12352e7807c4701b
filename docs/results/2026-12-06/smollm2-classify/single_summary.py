"""The single ablations of SmolLM2-135M on rotten_tomatoes at 5.7x, with every seed that was run:
seed 0 of each from `single/` (without recovery), `single2/` (without inheritance) and `single3/`
(without distillation); seeds 1-2 of without inheritance from `single2-seeds/` and seed 1 of
without distillation from `single3-seeds/` and seed 2 from `single3-seed2/`; seeds 1 and 2 of without
recovery from `single-seed1/` and `single-seed2/` (all run 2026-12-07).
Full CA-LoRA and LoRA from scratch per seed as in seeds_summary.py (seed 0 from the main run and
its ablation, seeds 1-2 from `seeds/`); same teacher (seed 0) for every row.

Share of the gap, per seed and paired: (variant - LoRA from scratch of that seed) / (teacher -
LoRA from scratch of that seed); the median of the per-seed shares is quoted, as at 6.4x.

    python docs/results/2026-12-06/smollm2-classify/single_summary.py   # writes single_summary.{json,md}
"""

import json
import statistics as st
from pathlib import Path

HERE = Path(__file__).parent
STEM = "ablation_smollm2-135m_rotten_tomatoes_int4g32_sparse0.5_embint8.json"
SCRATCH, CALORA = "compressed + LoRA from scratch", "compressed + CA-LoRA"
VARIANTS = (CALORA, "CA-LoRA without inherit", "CA-LoRA without recover", "CA-LoRA without distill")
#: folders whose ablation results hold runs of these variants (a folder not there yet is skipped)
FOLDERS = (".", "seeds", "single", "single2", "single3", "single2-seeds", "single3-seeds", "single3-seed2",
           "single-seed1", "single-seed2")
SPLITS = ("validation", "test")


def collect() -> tuple[dict, dict]:
    """variant -> seed -> split -> accuracy, and the teacher's accuracy per split."""
    main_run = json.loads((HERE / "train_rotten_tomatoes_5.7x_metrics.json").read_text())
    acc: dict[str, dict[int, dict[str, float]]] = {v: {} for v in (SCRATCH, *VARIANTS)}
    acc[CALORA][0] = {s: main_run["student"][s]["accuracy"] for s in SPLITS}
    for folder in FOLDERS:
        path = HERE / folder / STEM
        if not path.is_file():
            continue
        for run in json.loads(path.read_text())["runs"]:
            if run["variant"] in acc:
                assert run["seed"] not in acc[run["variant"]], (folder, run["variant"], run["seed"])
                acc[run["variant"]][run["seed"]] = {s: run["student"][s]["accuracy"] for s in SPLITS}
    return acc, {s: main_run["teacher"][s]["accuracy"] for s in SPLITS}


def main() -> None:
    acc, teacher = collect()
    out: dict = {"teacher": teacher, "rows": {}}
    lines = ["| model | seeds | test, per seed | test, mean ± std | share of the test gap, per seed | median | "
             "validation, mean | median share (validation) |", "|---|---|---|---|---|---|---|---|"]
    for v in (SCRATCH, *VARIANTS):
        seeds = sorted(acc[v])
        row: dict = {"seeds": seeds}
        for s in SPLITS:
            vals = [acc[v][k][s] for k in seeds]
            row[s] = {"per_seed": vals, "mean": st.mean(vals), "std": st.stdev(vals) if len(vals) > 1 else None}
            if v != SCRATCH:
                shares = [(acc[v][k][s] - acc[SCRATCH][k][s]) / (teacher[s] - acc[SCRATCH][k][s]) for k in seeds]
                row[s]["gap_share_per_seed"] = shares
                row[s]["gap_share_median"] = st.median(shares)
        out["rows"][v] = row
        t = row["test"]
        std = f" ± {100 * t['std']:.1f}" if t["std"] is not None else ""
        share = (" / ".join(f"{100 * x:.0f}%" for x in t["gap_share_per_seed"]), f"{100 * t['gap_share_median']:.0f}%",
                 f"{100 * row['validation']['gap_share_median']:.0f}%") if v != SCRATCH else ("", "", "")
        lines.append(f"| {v} | {', '.join(map(str, seeds))} | " + " / ".join(f"{100 * x:.1f}" for x in t["per_seed"])
                     + f" | {100 * t['mean']:.1f}{std} | {share[0]} | {share[1]} | "
                     f"{100 * row['validation']['mean']:.1f} | {share[2]} |")
    lines += ["", f"Teacher (uncompressed + LoRA, seed 0): {100 * teacher['test']:.1f} test, "
              f"{100 * teacher['validation']:.1f} validation.", ""]
    (HERE / "single_summary.json").write_text(json.dumps(out, indent=2) + "\n")
    (HERE / "single_summary.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
