#!/bin/bash
# MiniLM rotten_tomatoes at the default 4.7x route with int4 group 128 instead of 32 (2026-12-07, CPU-X).
# Why: qb4w_group_probe.py timed XNNPACK int4 linears of MiniLM's shapes at 0.79x with group 128 (per channel
# 0.75x, int8 per channel 0.82x) against group 32. Stages: train | export | validate | latency.
# Run from the repository root: bash run.sh STAGE
set -e
source .venv/bin/activate
W=bench_runs/g128; R=docs/results/2026-12-07/int4-group; T=bench_runs/et-ffn/rotten_tomatoes/teacher
case "$1" in
train)  # the same imported teacher (the default recipe's, 81.3 test), seed 0, group 32 (the default) and 128
  for g in 32 128; do
    echo "== $(date -u +%H:%M:%S) train g$g"
    [ -f $W/runs-g$g/rotten_tomatoes/calora/metrics.json ] || /usr/bin/time -f "%e s" calora-train --task rotten_tomatoes \
      --compression int4:g$g+sparse:0.5+emb:int8 --teacher $T --out $W/runs-g$g > $W/train-g$g.log 2>&1
    tail -4 $W/train-g$g.log; cp $W/runs-g$g/rotten_tomatoes/calora/metrics.json $R/metrics_g$g.json
  done;;
seeds)  # seeds 1 and 2 of both groups, the same teacher (quality only; not exported)
  for s in 1 2; do for g in 32 128; do
    echo "== $(date -u +%H:%M:%S) train g$g seed $s"
    [ -f $W/runs-g$g-s$s/rotten_tomatoes/calora/metrics.json ] || /usr/bin/time -f "%e s" calora-train --task rotten_tomatoes \
      --compression int4:g$g+sparse:0.5+emb:int8 --teacher $T --seed $s --out $W/runs-g$g-s$s > $W/train-g$g-s$s.log 2>&1
    tail -3 $W/train-g$g-s$s.log | head -2; cp $W/runs-g$g-s$s/rotten_tomatoes/calora/metrics.json $R/metrics_g${g}_seed$s.json
  done; done;;
export)
  for g in 32 128; do
    echo "== $(date -u +%H:%M:%S) export g$g"
    [ -f $W/et-baked-g$g/manifest.json ] || calora-export --target executorch --mode baked --task rotten_tomatoes \
      --runs $W/runs-g$g --out $W/et-baked-g$g > $W/export-g$g.log 2>&1
    tail -2 $W/export-g$g.log; cp $W/et-baked-g$g/manifest.json $R/manifest-et-baked-g$g.json
  done;;
validate)  # the full test split against PyTorch in ExecuTorch's runtime
  for g in 32 128; do
    echo "== $(date -u +%H:%M:%S) validate g$g"
    calora-validate $W/et-baked-g$g --runs $W/runs-g$g --report $R/parity-et-baked-g$g > $W/validate-g$g.log 2>&1 || true
    tail -1 $W/validate-g$g.log
  done;;
latency)  # both programs beside the do-it-yourself alternative (built from the same teacher), interleaved
  echo "== $(date -u +%H:%M:%S) latency ${2:-run1}"
  python -m benchmarks.classify_latency --runs $W/runs-g32 --task rotten_tomatoes --bundles $W/et-baked-g32 $W/et-baked-g128 \
    --rounds ${3:-7} --examples 100 --work $W/work --out $R/classify_latency_g128_${2:-run1}.json > $W/latency-${2:-run1}.log 2>&1
  tail -12 $W/latency-${2:-run1}.log;;
onnx)  # the same two trained models as ONNX Runtime bundles (MatMulNBits block 32 against 128), validated and timed
  for g in 32 128; do
    echo "== $(date -u +%H:%M:%S) onnx g$g"
    [ -f $W/onnx-baked-g$g/manifest.json ] || calora-export --target onnx --mode baked --task rotten_tomatoes \
      --runs $W/runs-g$g --out $W/onnx-baked-g$g > $W/export-onnx-g$g.log 2>&1
    tail -1 $W/export-onnx-g$g.log; cp $W/onnx-baked-g$g/manifest.json $R/manifest-onnx-baked-g$g.json
    calora-validate $W/onnx-baked-g$g --runs $W/runs-g$g --report $R/parity-onnx-baked-g$g > $W/validate-onnx-g$g.log 2>&1 || true
    tail -1 $W/validate-onnx-g$g.log
  done
  echo "== $(date -u +%H:%M:%S) latency onnx"
  python -m benchmarks.classify_latency --runs $W/runs-g32 --task rotten_tomatoes --bundles $W/onnx-baked-g32 $W/onnx-baked-g128 \
    $W/et-baked-g32 $W/et-baked-g128 --rounds 7 --examples 100 --work $W/work --out $R/classify_latency_g128_onnx_et.json \
    > $W/latency-onnx.log 2>&1
  tail -8 $W/latency-onnx.log;;
esac
