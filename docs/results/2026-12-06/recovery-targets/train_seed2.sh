#!/bin/bash
# third seed of every variant, and attention-only recovery at three seeds (quality only)
source .venv/bin/activate
while pgrep -f "rt/after.sh" >/dev/null; do sleep 10; done
T=bench_runs/runs-gen/movie_dialog/teacher
common="--backbone smollm2-135m --task movie_dialog --batch-size 8 --max-train-examples 320 --max-eval-examples 200 --compression int4:g32+emb:int8 --teacher $T"
run() { name=$1; seed=$2; shift 2; out=bench_runs/rt/runs-$name-s$seed
  [ -f $out/movie_dialog/calora/metrics.json ] && return
  echo "== $(date -u +%H:%M:%S) $name seed $seed: $*"; /usr/bin/time -f "%e s" calora-train $common --seed $seed --out $out "$@" > bench_runs/rt/train-$name-s$seed.log 2>&1; tail -3 bench_runs/rt/train-$name-s$seed.log; }
run all 2
run none 2 --no-recover
run mlp 2 --recovery-targets gate_proj up_proj down_proj
run odown 2 --recovery-targets o_proj down_proj
run down 2 --recovery-targets down_proj
run attn 0 --recovery-targets q_proj k_proj v_proj o_proj
run attn 1 --recovery-targets q_proj k_proj v_proj o_proj
run attn 2 --recovery-targets q_proj k_proj v_proj o_proj
echo "== done $(date -u +%H:%M:%S)"
