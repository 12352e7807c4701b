#!/usr/bin/env bash
# The ExecuTorch int8 FFN-pruned route (`--compression int8+ffn:0.5+emb:int4`, per-token
# activations, 2 epochs, the default recipe's teacher) at seeds 1 and 2, beside seed 0 of
# `et-xnnpack-graph/run.sh`: CA-LoRA's test accuracy in PyTorch and as deployed (baked and
# swappable ExecuTorch bundles, full test split), CPU-X, 2026-12-07. Run from the repository root
# with .venv/bin on PATH: `run.sh [STAGE...]`, stages train export validate.
set -uo pipefail
R=docs/results/2026-12-07/et-ffn-seeds
T=bench_runs/runs-4.7x/rotten_tomatoes/teacher
STAGES=${*:-train export validate}
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
for S in 1 2; do
  F=bench_runs/et-ffn-s$S
  if has train; then
    [ -f $F/rotten_tomatoes/calora/metrics.json ] || step calora-train --task rotten_tomatoes \
      --compression int8+ffn:0.5+emb:int4 --teacher $T --epochs 2 --seed $S --out $F
    cp $F/rotten_tomatoes/calora/metrics.json $R/train_int8_ffn50_seed$S.json
  fi
  if has export; then
    for m in baked swappable; do
      [ -f $F/bundles/et-$m/manifest.json ] || step calora-export --target executorch --mode $m \
        --task rotten_tomatoes --runs $F --out $F/bundles/et-$m
    done
  fi
  if has validate; then
    step calora-validate $F/bundles/et-baked $F/bundles/et-swappable --runs $F --report $R/parity-seed$S --overwrite
  fi
done
