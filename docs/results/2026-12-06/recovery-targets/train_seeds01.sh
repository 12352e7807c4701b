#!/bin/bash
# recovery-targets study for generation: same teacher, dense int4, 2-core schedule
source .venv/bin/activate
T=bench_runs/runs-gen/movie_dialog/teacher
common="--backbone smollm2-135m --task movie_dialog --batch-size 8 --max-train-examples 320 --max-eval-examples 200 --compression int4:g32+emb:int8 --teacher $T"
run() { name=$1; seed=$2; shift 2; out=bench_runs/rt/runs-$name-s$seed
  [ -f $out/movie_dialog/calora/metrics.json ] && return
  echo "== $(date -u +%H:%M:%S) $name seed $seed: $*"; /usr/bin/time -f "%e s" calora-train $common --seed $seed --out $out "$@" > bench_runs/rt/train-$name-s$seed.log 2>&1; tail -4 bench_runs/rt/train-$name-s$seed.log; }
run down 0 --recovery-targets down_proj
run odown 0 --recovery-targets o_proj down_proj
run mlp 0 --recovery-targets gate_proj up_proj down_proj
run all 1
run none 1 --no-recover
run down 1 --recovery-targets down_proj
run odown 1 --recovery-targets o_proj down_proj
run mlp 1 --recovery-targets gate_proj up_proj down_proj
echo "== done $(date -u +%H:%M:%S)"
