#!/usr/bin/env bash
# SmolLM2-135M classifier on ExecuTorch without a KV cache (f435c2e: decoder classifiers are exported
# with use_cache=False; before, every layer's one-tensor DynamicCache `cat` ran outside XNNPACK and
# split the program, 33 delegate calls for 30 layers) against the same task's bundle exported at
# 4013792 (with the cache) and the do-it-yourself alternative, CPU-X, 2026-12-07. Run from the
# repository root with .venv/bin on PATH: `run.sh [STAGE...]`, stages export validate latency.
# The trained model is the 2026-12-07 retrain of `et-xnnpack-graph/run.sh` (stage smol).
set -uo pipefail
R=docs/results/2026-12-07/et-decoder-no-cache
W=bench_runs/smol-cls/runs-4.7x
STAGES=${*:-export validate latency}
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
if has export; then
  [ -f $W/bundles/et-baked-nocache/manifest.json ] || step calora-export --target executorch --mode baked \
    --task rotten_tomatoes --runs $W --out $W/bundles/et-baked-nocache
fi
if has validate; then
  step calora-validate $W/bundles/et-baked-nocache --runs $W --report $R/parity-smollm2 --overwrite
fi
if has latency; then
  step python -m benchmarks.classify_latency --runs $W --task rotten_tomatoes --bundles $W/bundles/et-baked-fused \
    $W/bundles/et-baked-nocache --rounds 5 --examples 100 --work bench_runs/work \
    --out $R/classify_latency_smollm2_et_no_cache.json
fi
# profile (15:32 UTC, by hand): python -m benchmarks.et_profile $W/bundles/et-baked-nocache --task rotten_tomatoes --runs 30 --top 15 --by-operator --out $R/et_profile_smollm2_no_cache.json
