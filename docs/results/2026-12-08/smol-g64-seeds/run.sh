#!/usr/bin/env bash
# SmolLM2-135M as the rotten_tomatoes classifier: int4 group 64 against group 32 (the 5.7x route,
# int4:g{32,64}+sparse:0.5+emb:int8), following up ../../2026-12-07/int4-group-tasks's smol stage (seed 0, one timing run).
# Stages:
#   latency2, latency3  a second and a third timing run of the seed-0 programs (group 32: bench_runs/smol-cls/runs-4.7x/bundles/et-baked-nocache;
#             group 64: bench_runs/g128-tasks/smol-et-baked-g64) beside the do-it-yourself alternative, 7 rounds x 100
#   seeds     CA-LoRA at seeds 1 and 2 for both groups, on the same imported teacher (the seed-0 group-32 run's),
#             scored in PyTorch on the validation and test splits (SEEDS="1" runs seed 1 only)
# Run from the repository root: bash run.sh STAGE...
set -uo pipefail
source .venv/bin/activate
S=bench_runs/smol-cls/runs-4.7x; W=bench_runs/smol-g64-seeds; R=docs/results/2026-12-08/smol-g64-seeds; mkdir -p $W
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; return $rc; }
for stage in "$@"; do case "$stage" in
latency2|latency3)  # run2 (00:51-01:04 UTC): the alternative's rounds spread from 35 to 71 ms; run3 after the seeds
  n=${stage#latency}
  step python -m benchmarks.classify_latency --runs $S --task rotten_tomatoes --bundles $S/bundles/et-baked-nocache \
    bench_runs/g128-tasks/smol-et-baked-g64 --rounds 7 --examples 100 --work bench_runs/work \
    --out $R/classify_latency_smol_g64_run$n.json > $W/latency$n.log 2>&1
  tail -n 8 $W/latency$n.log;;
seeds)
  for s in ${SEEDS:-1 2}; do for g in 64 32; do
    out=$W/g$g-s$s
    [ -f $out/rotten_tomatoes/calora/metrics.json ] || step calora-train --backbone smollm2-135m --task rotten_tomatoes \
      --compression int4:g$g+sparse:0.5+emb:int8 --teacher $S/rotten_tomatoes/teacher --seed $s --out $out \
      > $W/train-g$g-s$s.log 2>&1
    tail -n 3 $W/train-g$g-s$s.log | head -n 1
    cp $out/rotten_tomatoes/calora/metrics.json $R/metrics_g${g}_seed$s.json
  done; done;;
*) echo "unknown stage $stage"; exit 2;;
esac; done
