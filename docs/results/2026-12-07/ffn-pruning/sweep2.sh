#!/bin/bash
set -u
cd /work/main
T=bench_runs/runs-4.7x/rotten_tomatoes/teacher
S=bench_runs/struct
echo "== ffn50h25 $(date -u +%H:%M:%S)"
.venv/bin/calora-train --task rotten_tomatoes --teacher $T --out $S/ffn50h25 --compression int8+act:tensor+ffn:0.5+heads:0.25+emb:int4 > $S/train-ffn50h25.log 2>&1; echo rc=$?
grep -A3 "val acc" $S/train-ffn50h25.log | tail -3; grep "cut to" $S/train-ffn50h25.log
.venv/bin/calora-export --target onnx --task rotten_tomatoes --mode baked --runs $S/ffn50h25 --out $S/bundles-ffn50h25/onnx-baked > $S/export-ffn50h25.log 2>&1; echo export rc=$?
.venv/bin/calora-export --target onnx --task rotten_tomatoes --mode swappable --runs $S/ffn50e2 --out $S/bundles-ffn50e2/onnx-swappable > $S/export-ffn50e2-sw.log 2>&1; echo export rc=$?
echo "== latency $(date -u +%H:%M:%S)"
.venv/bin/python -m benchmarks.classify_latency --runs bench_runs/runs-4.7x --task rotten_tomatoes --bundles $S/bundles-ffn50e2/onnx-baked $S/bundles-ffn50e2/onnx-swappable $S/bundles-ffn50rd/onnx-baked $S/bundles-ffn50nr/onnx-baked $S/bundles-ffn50h25/onnx-baked --rounds 5 --examples 100 --work $S/latency-work --out $S/results/classify_latency_struct1.json > $S/latency1.log 2>&1; echo rc=$?
tail -9 $S/latency1.log
echo "== done $(date -u +%H:%M:%S)"
