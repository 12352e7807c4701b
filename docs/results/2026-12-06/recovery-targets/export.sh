#!/bin/bash
source .venv/bin/activate
for v in mlp down odown; do
  for t in onnx executorch; do
    out=bench_runs/bundles-gen/$t-baked-dense-rec$v
    [ -f $out/manifest.json ] && continue
    echo "== $(date -u +%H:%M:%S) $t $v"
    /usr/bin/time -f "%e s" calora-export --target $t --mode baked --task movie_dialog --runs bench_runs/rt/runs-$v-s0 --out $out > bench_runs/rt/export-$t-$v.log 2>&1; tail -2 bench_runs/rt/export-$t-$v.log
  done
done
echo "== done $(date -u +%H:%M:%S)"
