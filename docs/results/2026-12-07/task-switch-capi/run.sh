#!/usr/bin/env bash
# Task switch at the 6.1x level, ONNX Runtime through its Python API and through its C API (what an
# app's native code calls; the adapter memory-mapped), side by side in one run (CPU-X, 2026-12-07).
# Run from the repository root with the project's .venv/bin on PATH: `run.sh [STAGE...]`, stages
# train export validate switch split probe (default: all; train and export skip a finished model or bundle).
# The two MiniLM tasks of the 2026-12-05 main run at 6.1x, retrained with the same commands (those
# runs were not kept): rotten_tomatoes with the 4.7x run's teacher, sms_spam with its teacher from
# the 2026-12-06 inherited-LoRA run (a calora-train teacher of the same recipe).
set -uo pipefail
W=${W:-bench_runs/ts61}
R=docs/results/2026-12-07/task-switch-capi
L=int4:g32+sparse:0.5+emb:int4
STAGES=${*:-train export validate switch split probe}
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
declare -A TEACHER=([rotten_tomatoes]=bench_runs/runs-4.7x/rotten_tomatoes/teacher
                    [sms_spam]="bench_runs/inherited/sms-int4:g32+sparse:0.5+emb:int8/sms_spam/teacher")
if has train; then
  for t in rotten_tomatoes sms_spam; do
    [ -f $W/runs/$t/calora/metrics.json ] || \
      step calora-train --task $t --compression $L --teacher "${TEACHER[$t]}" --out $W/runs
    cp $W/runs/$t/calora/metrics.json $R/train_${t}_6.1x_metrics.json
  done
fi
if has export; then
  for m in baked swappable; do
    [ -f $W/bundles/onnx-$m/manifest.json ] || \
      step calora-export --target onnx --mode $m --task rotten_tomatoes,sms_spam --runs $W/runs --out $W/bundles/onnx-$m
  done
fi
if has validate; then
  step calora-validate $W/bundles/onnx-baked $W/bundles/onnx-swappable --runs $W/runs --report $R/parity --overwrite
fi
if has switch; then
  step python -m benchmarks.task_switch --swappable $W/bundles/onnx-swappable --baked $W/bundles/onnx-baked \
    --onnx-api both --runs $W/runs --rounds 5 --switches 20 --work $W/work --out $R/task_switch_capi_6.1x.json
fi
# `switch` ran 07:04-07:05 UTC timing each switch as one span (opening the other task and freeing
# the previous one together). benchmarks/task_switch.py was then changed to time the two parts apart
# (switch_open / reload_open and release); `split` is that version, run twice, 07:08-07:10 UTC
if has split; then
  for f in task_switch_capi_6.1x_split task_switch_capi_6.1x_split_2; do
    step python -m benchmarks.task_switch --swappable $W/bundles/onnx-swappable --baked $W/bundles/onnx-baked \
      --onnx-api both --runs $W/runs --rounds 5 --switches 20 --work $W/work --out $R/$f.json
  done
fi
# where the C API's switch goes, part by part (07:07 UTC, between `switch` and `split`)
if has probe; then
  step env PYTHONPATH=. python $R/switch_parts_probe.py $W/bundles/onnx-swappable $R/switch_parts_probe.json
fi
