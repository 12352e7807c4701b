#!/usr/bin/env bash
# The training step before and after the adapter branches accumulate into the base output by addmm
# in training, in alternating processes: "before" runs with the parent commit's train/adapters.py
# swapped in, "after" with the working tree's, which was then a prototype (in train mode,
# AdaptedLinear added each branch's up-projection into the base output with
# torch.addmm(y2d, h, W.t(), alpha=scaling); evaluation and export kept linear + add). Measured
# 2-4% faster steps with recovery and not adopted (RESULTS.md section 7), so the file it ran is
# no longer in the repository; the current file is put back on exit.
set -euo pipefail
R=docs/results/2026-12-06/train-step
cp train/adapters.py /tmp/adapters_after.py
trap 'cp /tmp/adapters_after.py train/adapters.py' EXIT
for i in 1 2; do
  git show 7d8bff3:train/adapters.py > train/adapters.py
  .venv/bin/python -m benchmarks.train_step --runs bench_runs/runs-4.7x --task rotten_tomatoes --rounds 3 \
    --out "$R/train_step_rotten_tomatoes_addmm_before_$i.json"
  cp /tmp/adapters_after.py train/adapters.py
  .venv/bin/python -m benchmarks.train_step --runs bench_runs/runs-4.7x --task rotten_tomatoes --rounds 3 \
    --out "$R/train_step_rotten_tomatoes_addmm_after_$i.json"
done
