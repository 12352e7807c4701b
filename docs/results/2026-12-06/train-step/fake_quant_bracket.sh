#!/usr/bin/env bash
# The training step before and after the in-place activation fake-quant (train/quant.py), in
# alternating processes: "before" runs with the parent commit's train/quant.py swapped in, and the
# current file is put back on exit. The two forms give bit-identical outputs (tests/test_quant.py).
set -euo pipefail
R=docs/results/2026-12-06/train-step
cp train/quant.py /tmp/quant_after.py
trap 'cp /tmp/quant_after.py train/quant.py' EXIT
for i in 2; do
  git show b5e6a06:train/quant.py > train/quant.py
  .venv/bin/python -m benchmarks.train_step --runs bench_runs/runs-4.7x --task rotten_tomatoes --rounds 3 \
    --out "$R/train_step_rotten_tomatoes_before_$i.json"
  cp /tmp/quant_after.py train/quant.py
  .venv/bin/python -m benchmarks.train_step --runs bench_runs/runs-4.7x --task rotten_tomatoes --rounds 3 \
    --out "$R/train_step_rotten_tomatoes_after_$i.json"
done
