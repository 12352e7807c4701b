#!/usr/bin/env bash
# SmolLM2-135M-Instruct as a classification backbone on rotten_tomatoes (CPU-X, 2026-12-06).
# Run from the repository root with the project's .venv/bin on PATH: `run.sh [STAGE...]`, stages in
# the order they ran: train export ablation validate 6x (default: all; finished ones are skipped).
# W is the work folder. The `parity-*-before` reports come from the `export` stage's calora-validate
# calls (the same commands, --report parity-TARGET-baked) before the change to calora-validate's
# references and int8 gates; `validate` is the run after it.
set -uo pipefail
W=${W:-bench_runs/smol-cls}
R=docs/results/2026-12-06/smollm2-classify
B=smollm2-135m
T=$W/runs-4.7x/rotten_tomatoes/teacher
L6=int4:g32+sparse:0.5+emb:int4
STAGES=${*:-train export ablation validate 6x}
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }

# teacher (LoRA on the uncompressed backbone) and CA-LoRA at the default compression
if has train && [ ! -f $W/runs-4.7x/rotten_tomatoes/calora/metrics.json ]; then
  step calora-train --backbone $B --task rotten_tomatoes --out $W/runs-4.7x
fi
# the deployed artifacts of that CA-LoRA
if has export; then
  for t in onnx executorch; do
    [ -f $W/bundles/$t-baked/manifest.json ] || \
      step calora-export --target $t --mode baked --task rotten_tomatoes --runs $W/runs-4.7x --out $W/bundles/$t-baked
  done
fi
# baselines on the same teacher and level, and the inherited LoRA scored untrained
if has ablation; then
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --teacher $T --out $W/ablation-4.7x \
    --seeds 0 --results $R --variants 'compressed + LoRA from scratch' 'compressed + LoftQ-initialised LoRA' \
    'compressed + inherited LoRA, untrained'
fi
# both artifacts on the whole test split, in their runtimes
if has validate; then
  step calora-validate $W/bundles/onnx-baked $W/bundles/executorch-baked --report $R/parity-baked --overwrite
fi
# the 6x level: int4 token embeddings, same teacher
if has 6x; then
  [ -f $W/runs-6x/rotten_tomatoes/calora/metrics.json ] || \
    step calora-train --backbone $B --task rotten_tomatoes --compression $L6 --teacher $T --out $W/runs-6x
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --compression $L6 --teacher $T \
    --out $W/ablation-6x --seeds 0 --results $R --variants 'compressed + LoRA from scratch' \
    'compressed + inherited LoRA, untrained'
fi
