#!/usr/bin/env bash
# CA-LoRA on SmolLM2-135M movie_dialog at int4:g32+emb:int8 (the dense generative level of
# bench_runs/runs-gen-dense), the CPU-sized default schedule (320 examples, 40 steps), 3 seeds,
# with the teacher's forward pass in float32 (the default) and with --teacher-precision bf16,
# same imported teacher. Greedy evaluation on 64 prompts per split (perplexity on 200): run_gen.sh with 4x the prompts.
set -euo pipefail
R=docs/results/2026-12-06/teacher-precision
T=bench_runs/runs-gen-dense/movie_dialog/teacher
for prec in training bf16; do
  .venv/bin/python -m calora.train.ablation --backbone smollm2-135m --task movie_dialog --teacher "$T" \
    --compression int4:g32+emb:int8 --seeds 0 1 2 --variants "compressed + CA-LoRA" \
    --eval-generate-examples 64 --teacher-precision "$prec" \
    --out "bench_runs/ts/abl-gen64-$prec" --results "$R/gen64-$prec"
done
