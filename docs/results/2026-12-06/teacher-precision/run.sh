#!/usr/bin/env bash
# CA-LoRA on rotten_tomatoes at the default 4.7x level, 3 seeds, with the teacher's forward pass in
# float32 (the default) and in bfloat16 (--teacher-precision bf16), same imported teacher.
# Run from the repository root after `calora-train --task rotten_tomatoes --out bench_runs/runs-4.7x`.
set -euo pipefail
R=docs/results/2026-12-06/teacher-precision
T=bench_runs/runs-4.7x/rotten_tomatoes/teacher
for prec in training bf16; do
  .venv/bin/python -m calora.train.ablation --task rotten_tomatoes --teacher "$T" --seeds 0 1 2 \
    --variants "compressed + CA-LoRA" --teacher-precision "$prec" \
    --out "bench_runs/ts/abl-$prec" --results "$R/$prec"
done
