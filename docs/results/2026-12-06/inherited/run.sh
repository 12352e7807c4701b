#!/usr/bin/env bash
# The "compressed + inherited LoRA, untrained" row of RESULTS.md section 1 for MiniLM (CPU-X, 2026-12-06):
# the teacher's LoRA scored on each compressed backbone before any training. Nothing is trained but the
# sms_spam teacher, which is not on this machine any more (same command and schedule as on 2026-12-05; the
# teacher's scores in each file show whether it is the same teacher). question_type's 10-epoch teacher
# was not retrained for lack of time.
# Run from the repository root with the project's .venv on PATH; W is the work folder.
set -uo pipefail
W=${W:-bench_runs/inherited}
R=docs/results/2026-12-06/inherited
ROW='compressed + inherited LoRA, untrained'
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; }
for L in int4:g32+sparse:0.5+emb:int8 int4:g32+sparse:0.5+emb:int4; do
  # rotten_tomatoes: the teacher of the benchmark run (bench_runs/runs-4.7x, trained 2026-12-06 16:26 UTC)
  step python -m calora.train.ablation --task rotten_tomatoes --compression $L \
    --teacher bench_runs/runs-4.7x/rotten_tomatoes/teacher --out $W/rt-$L --results $R --seeds 0 --variants "$ROW"
  # sms_spam: the teacher is trained by the first call (1 epoch, as on 2026-12-05), imported by the second
  t=$W/sms-int4:g32+sparse:0.5+emb:int8/sms_spam/teacher
  if [ -d "$t" ]; then tf=(--teacher "$t"); else tf=(); fi
  step python -m calora.train.ablation --task sms_spam --compression $L "${tf[@]}" --out $W/sms-$L --results $R --seeds 0 \
    --variants "$ROW"
done
