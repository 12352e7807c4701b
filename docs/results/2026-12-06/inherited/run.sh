#!/usr/bin/env bash
# The "compressed + inherited LoRA, untrained" row of RESULTS.md section 1 for MiniLM (CPU-X, 2026-12-06):
# the teacher's LoRA scored on each compressed backbone before any training. Nothing is trained but the
# sms_spam teacher, which is not on this machine any more (same command and schedule as on 2026-12-05; the
# teacher's scores in each file show whether it is the same teacher). question_type's 10-epoch teacher
# was not retrained then; it was on 2026-12-07 (the question_type stage, at the end).
# Run from the repository root with the project's .venv on PATH: `run.sh [STAGE...]`, stages
# rotten_tomatoes+sms_spam (called `minilm`) and question_type (default: both); W is the work folder.
set -uo pipefail
W=${W:-bench_runs/inherited}
R=docs/results/2026-12-06/inherited
ROW='compressed + inherited LoRA, untrained'
STAGES=${*:-minilm question_type}
has() { [[ " $STAGES " == *" $1 "* ]]; }
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; }
has minilm && for L in int4:g32+sparse:0.5+emb:int8 int4:g32+sparse:0.5+emb:int4; do
  # rotten_tomatoes: the teacher of the benchmark run (bench_runs/runs-4.7x, trained 2026-12-06 16:26 UTC)
  step python -m calora.train.ablation --task rotten_tomatoes --compression $L \
    --teacher bench_runs/runs-4.7x/rotten_tomatoes/teacher --out $W/rt-$L --results $R --seeds 0 --variants "$ROW"
  # sms_spam: the teacher is trained by the first call (1 epoch, as on 2026-12-05), imported by the second
  t=$W/sms-int4:g32+sparse:0.5+emb:int8/sms_spam/teacher
  if [ -d "$t" ]; then tf=(--teacher "$t"); else tf=(); fi
  step python -m calora.train.ablation --task sms_spam --compression $L "${tf[@]}" --out $W/sms-$L --results $R --seeds 0 \
    --variants "$ROW"
done
# question_type (run 2026-12-07): its 10-epoch teacher retrained with the same command and seed as on
# 2026-12-05 (the teacher's scores in the file show whether it is the same teacher), then imported at 6.1x
if has question_type; then
  QT=$W/qt-int4:g32+sparse:0.5+emb:int8/question_type/teacher
  step python -m calora.train.ablation --task question_type --epochs 10 --compression int4:g32+sparse:0.5+emb:int8 \
    --out $W/qt-int4:g32+sparse:0.5+emb:int8 --results $R --seeds 0 --variants "$ROW"
  step python -m calora.train.ablation --task question_type --epochs 10 --compression int4:g32+sparse:0.5+emb:int4 \
    --teacher $QT --out $W/qt-int4:g32+sparse:0.5+emb:int4 --results $R --seeds 0 --variants "$ROW"
fi
