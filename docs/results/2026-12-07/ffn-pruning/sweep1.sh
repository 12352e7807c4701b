#!/bin/bash
# structured-pruning sweep 1 (MiniLM rotten_tomatoes, int8 act:tensor route), 2026-12-07
set -u
cd /work/main
T=bench_runs/runs-4.7x/rotten_tomatoes/teacher
tr() { name=$1; shift; echo "== $name $(date -u +%H:%M:%S)"; .venv/bin/calora-train --task rotten_tomatoes --teacher $T --out bench_runs/struct/$name "$@" > bench_runs/struct/train-$name.log 2>&1; echo "rc=$?"; tail -4 bench_runs/struct/train-$name.log | head -3;
  .venv/bin/calora-export --target onnx --task rotten_tomatoes --mode baked --runs bench_runs/struct/$name --out bench_runs/struct/bundles-$name/onnx-baked > bench_runs/struct/export-$name.log 2>&1; echo "export rc=$?"; }
tr ffn50e2 --compression int8+act:tensor+ffn:0.5+emb:int4 --epochs 2
tr ffn50h25 --compression int8+act:tensor+ffn:0.5+heads:0.25+emb:int4
tr ffn50rd --compression int8+act:tensor+ffn:0.5+emb:int4 --recovery-targets dense
tr ffn50nr --compression int8+act:tensor+ffn:0.5+emb:int4 --no-recover
echo "== done $(date -u +%H:%M:%S)"
