"""Aggregate the recovery-targets study: calora-train's own evaluation (200 validation and 200 test
examples, teacher-forced perplexity; token agreement with the teacher on 64 greedy generations) of
every variant and seed, as mean and sample standard deviation over seeds.

    python docs/results/2026-12-06/recovery-targets/quality_seeds.py \
        docs/results/2026-12-06/recovery-targets/quality_seeds.json

Runs: seed 0 of `all` and `none` are bench_runs/runs-gen-dense{,-norecover}; every other run is
bench_runs/rt/runs-VARIANT-sSEED (commands in this folder's README row)."""
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

VARIANTS = {"all": "every compressed linear (the default)", "mlp": "gate_proj up_proj down_proj",
            "attn": "q_proj k_proj v_proj o_proj", "odown": "o_proj down_proj", "down": "down_proj",
            "none": "--no-recover"}
runs = {("all", 0): "bench_runs/runs-gen-dense", ("none", 0): "bench_runs/runs-gen-dense-norecover"}
for p in Path("bench_runs/rt").glob("runs-*-s*"):
    name, seed = p.name[5:].rsplit("-s", 1)
    runs[(name, int(seed))] = str(p)
per_run, table = {}, {}
for (name, seed), r in sorted(runs.items()):
    m = Path(r) / "movie_dialog/calora/metrics.json"
    if not m.exists():
        continue
    s = json.loads(m.read_text())["student"]
    per_run[f"{name}-s{seed}"] = {"runs": r, "seed": seed, "val_ppl": s["validation"]["perplexity"],
                                  "test_ppl": s["test"]["perplexity"],
                                  "val_agree": s["validation"]["agreement_with_teacher"]["token_agreement"],
                                  "test_agree": s["test"]["agreement_with_teacher"]["token_agreement"]}
for name, targets in VARIANTS.items():
    rows = [v for k, v in per_run.items() if k.rsplit("-s", 1)[0] == name]
    if not rows:
        continue
    agg = {"recovery_targets": targets, "seeds": sorted(v["seed"] for v in rows)}
    for key in ("val_ppl", "test_ppl", "val_agree", "test_agree"):
        xs = [v[key] for v in rows]
        agg[key] = {"mean": statistics.mean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else None}
    table[name] = agg
for split in ("val", "test"):  # share of the recovery gain (none -> all) each variant keeps
    gain = table["none"][f"{split}_ppl"]["mean"] - table["all"][f"{split}_ppl"]["mean"]
    for name, agg in table.items():
        agg[f"{split}_gain_kept"] = (table["none"][f"{split}_ppl"]["mean"] - agg[f"{split}_ppl"]["mean"]) / gain
for split in ("val", "test"):  # paired by seed (same data order and init): points better than --no-recover
    for name, agg in table.items():
        d = [per_run[f"none-s{seed}"][f"{split}_ppl"] - per_run[f"{name}-s{seed}"][f"{split}_ppl"]
             for seed in agg["seeds"] if f"none-s{seed}" in per_run]
        agg[f"{split}_paired_gain"] = {"mean": statistics.mean(d), "sd": statistics.stdev(d) if len(d) > 1 else None}
print(f"{'variant':7s} {'seeds':8s} {'val ppl':>15s} {'test ppl':>15s} {'kept val':>8s} {'kept test':>9s} {'agree test':>10s}")
for name, a in table.items():
    f = lambda d: f"{d['mean']:.2f} ± {d['sd']:.2f}" if d["sd"] is not None else f"{d['mean']:.2f}"
    print(f"{name:7s} {','.join(map(str, a['seeds'])):8s} {f(a['val_ppl']):>15s} {f(a['test_ppl']):>15s} "
          f"{a['val_gain_kept']:8.0%} {a['test_gain_kept']:9.0%} {a['test_agree']['mean']:10.3f}"
          f"   paired gain val {f(a['val_paired_gain'])}, test {f(a['test_paired_gain'])}")
if len(sys.argv) > 1:
    Path(sys.argv[1]).write_text(json.dumps({
        "command": "python " + " ".join(sys.argv), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": "CPU-X (2 cores, Intel Xeon, AVX-512/VNNI/AMX)", "variants": table, "runs": per_run}, indent=1))
