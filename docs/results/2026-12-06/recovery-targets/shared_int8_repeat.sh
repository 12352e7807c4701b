#!/bin/bash
# two more timing runs of shared_int8.sh's comparison, with the baked o_proj down_proj program added
source .venv/bin/activate
B=bench_runs/bundles-gen; R=docs/results/2026-12-06/recovery-targets
for run in 2 3; do
echo "== $(date -u +%H:%M:%S) gen_decode run $run"
python -m benchmarks.gen_decode --bundles $B/executorch-baked-dense $B/executorch-baked-dense-recodown $B/executorch-shared-dense-recodown $B/executorch-shared-dense-recodown-int8 --runs bench_runs/runs-gen-dense --task movie_dialog --prompts 4 --new-tokens 16 --rounds 7 --quality-examples 64 --no-pytorch --work bench_runs/gen-alternative --threads 2 --out $R/gen_decode_shared_recodown_int8_threads2_run$run.json > bench_runs/rt/gen_decode_shared_int8_run$run.log 2>&1; tail -6 bench_runs/rt/gen_decode_shared_int8_run$run.log
done
echo "== done $(date -u +%H:%M:%S)"
