#!/bin/bash
# Int4 group 128 against 32 beyond rotten_tomatoes at 4.7x (2026-12-07, CPU-X): question 26 asks whether int4 should
# default to group 128, and ../int4-group/ measured one task at one level. This adds question_type (6 classes) and
# sms_spam at the default 4.7x route, and rotten_tomatoes at 6.1x (int4 embeddings); seeds 0-2 of each group, each
# pair of groups on the same imported teacher; and question_type's seed-0 models as ExecuTorch programs (validated on
# the full test split, timed beside the do-it-yourself alternative). Stages: qt_teacher qt qt_et sms rt61 gen smol
# (gen: SmolLM2 generation, o_proj/down_proj recovery, group 64 against ../et-gen-graph's group-32 program;
# smol: SmolLM2 classification, group 64 against the group-32 program of bench_runs/smol-cls).
# Run from the repository root: bash run.sh STAGE...
set -uo pipefail
source .venv/bin/activate
W=bench_runs/g128-tasks; R=docs/results/2026-12-07/int4-group-tasks; mkdir -p $W
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; return $rc; }
QT=$W/qt-teacher/question_type/teacher
train() {  # task level group seed out-name [extra flags]: one calora-train run, skipped when its metrics exist
  local task=$1 level=$2 g=$3 s=$4 name=$5; shift 5
  local emb=int8; [ "$level" = 6.1x ] && emb=int4
  local out=$W/$name-g$g-s$s
  [ -f $out/$task/calora/metrics.json ] || step calora-train --task $task --compression int4:g$g+sparse:0.5+emb:$emb \
    --seed $s --out $out "$@" > $W/train-$name-g$g-s$s.log 2>&1
  tail -n 3 $W/train-$name-g$g-s$s.log | head -n 1
  cp $out/$task/calora/metrics.json $R/metrics_${name}_g${g}_seed$s.json
}
for stage in "$@"; do case "$stage" in
qt_teacher)  # question_type's 10-epoch teacher, the same command and seed as on 2026-12-05 and 2026-12-07 (its scores
  # in the file show whether it is the same teacher); the inherited row only scores it, nothing else is trained
  [ -f $QT/adapter_model.safetensors ] || step python -m calora.train.ablation --task question_type --epochs 10 \
    --compression int4:g32+sparse:0.5+emb:int8 --out $W/qt-teacher --results $R --seeds 0 \
    --variants 'compressed + inherited LoRA, untrained';;
qt)  # CA-LoRA, 3 epochs on the 10-epoch teacher (the schedule of RESULTS section 1), groups 32 and 128, seeds 0-2
  for s in 0 1 2; do for g in 32 128; do train question_type 4.7x $g $s qt --epochs 3 --teacher $QT; done; done;;
qt_et)  # seed 0 of both groups as baked ExecuTorch programs, validated on the full test split, timed beside the alternative
  for g in 32 128; do
    b=$W/qt-et-baked-g$g
    [ -f $b/manifest.json ] || step calora-export --target executorch --mode baked --task question_type \
      --runs $W/qt-g$g-s0 --out $b > $W/export-qt-g$g.log 2>&1
    tail -n 1 $W/export-qt-g$g.log; cp $b/manifest.json $R/manifest-qt-et-baked-g$g.json
    step calora-validate $b --runs $W/qt-g$g-s0 --report $R/parity-qt-et-baked-g$g > $W/validate-qt-g$g.log 2>&1
    tail -n 1 $W/validate-qt-g$g.log
  done
  for run in run1 run2; do
    step python -m benchmarks.classify_latency --runs $W/qt-g32-s0 --task question_type --bundles $W/qt-et-baked-g32 \
      $W/qt-et-baked-g128 --rounds 7 --examples 100 --work $W/work --out $R/classify_latency_qt_$run.json \
      > $W/latency-qt-$run.log 2>&1
    tail -n 8 $W/latency-qt-$run.log
  done;;
sms)  # sms_spam at its default 1-epoch schedule on the teacher of ../et-ffn-sms, groups 32 and 128, seeds 0-2
  for s in 0 1 2; do for g in 32 128; do
    train sms_spam 4.7x $g $s sms --teacher bench_runs/et-ffn-sms/sms_spam/teacher; done; done;;
rt61)  # rotten_tomatoes at 6.1x (int4 embeddings) on ../int4-group's teacher, groups 32 and 128, seeds 0-2
  for s in 0 1 2; do for g in 32 128; do
    train rotten_tomatoes 6.1x $g $s rt61 --teacher bench_runs/et-ffn/rotten_tomatoes/teacher; done; done;;
gen)  # SmolLM2 movie_dialog, o_proj/down_proj recovery (../et-gen-graph's fastest recovered program) at int4:g64+emb:int8 (group 128
  # is refused: SmolLM2's 576 input features are not a multiple of 128; 64 divides them),
  # on that run's teacher and schedule; exported baked, validated, and timed beside ../et-gen-graph's group-32 program
  # (et-baked-odown-before: exported by b14ce97, whose lowering the package still has) and the do-it-yourself model
  G=bench_runs/gen-graph
  [ -f $W/gen-odown-g64/movie_dialog/calora/metrics.json ] || step calora-train --backbone smollm2-135m --task movie_dialog \
    --batch-size 8 --max-train-examples 320 --max-eval-examples 200 --compression int4:g64+emb:int8 --seed 0 \
    --teacher $G/runs-all/movie_dialog/teacher --recovery-targets o_proj down_proj --out $W/gen-odown-g64 > $W/train-gen.log 2>&1
  tail -n 4 $W/train-gen.log | head -n 2; cp $W/gen-odown-g64/movie_dialog/calora/metrics.json $R/metrics_gen_odown_g64.json
  b=$W/gen-et-baked-odown-g64
  [ -f $b/manifest.json ] || step calora-export --target executorch --mode baked --task movie_dialog \
    --runs $W/gen-odown-g64 --out $b > $W/export-gen.log 2>&1
  tail -n 2 $W/export-gen.log; cp $b/manifest.json $R/manifest-gen-et-baked-odown-g64.json
  step calora-validate $b --runs $W/gen-odown-g64 --max-examples 8 --report $R/parity-gen-et-baked-odown-g64 > $W/validate-gen.log 2>&1
  tail -n 2 $W/validate-gen.log
  for run in "run1 7 64" "run2 11 0"; do set -- $run
    step python -m benchmarks.gen_decode --bundles $G/et-baked-odown-before $b --runs $G/runs-all --task movie_dialog \
      --prompts 4 --new-tokens 16 --rounds $2 --quality-examples $3 --work $G/gen-alternative --threads 2 \
      --out $R/gen_decode_g64_$1.json > $W/gen_decode_$1.log 2>&1
    tail -n 8 $W/gen_decode_$1.log
  done;;
smol)  # SmolLM2-135M as the rotten_tomatoes classifier at int4:g64+sparse:0.5+emb:int8 (5.7x's route with group 64: 128
  # does not divide 576), on the teacher of bench_runs/smol-cls/runs-4.7x (../et-xnnpack-graph's smol stage), seed 0;
  # exported baked, validated on the full test split, timed beside that run's group-32 program (et-baked-nocache:
  # ../et-decoder-no-cache, the package's current lowering) and the alternative
  S=bench_runs/smol-cls/runs-4.7x
  [ -f $W/smol-g64/rotten_tomatoes/calora/metrics.json ] || step calora-train --backbone smollm2-135m --task rotten_tomatoes \
    --compression int4:g64+sparse:0.5+emb:int8 --teacher $S/rotten_tomatoes/teacher --out $W/smol-g64 > $W/train-smol.log 2>&1
  tail -n 3 $W/train-smol.log | head -n 1; cp $W/smol-g64/rotten_tomatoes/calora/metrics.json $R/metrics_smol_g64.json
  b=$W/smol-et-baked-g64
  [ -f $b/manifest.json ] || step calora-export --target executorch --mode baked --task rotten_tomatoes \
    --runs $W/smol-g64 --out $b > $W/export-smol.log 2>&1
  tail -n 2 $W/export-smol.log; cp $b/manifest.json $R/manifest-smol-et-baked-g64.json
  step calora-validate $b --runs $W/smol-g64 --report $R/parity-smol-et-baked-g64 > $W/validate-smol.log 2>&1
  tail -n 2 $W/validate-smol.log
  step python -m benchmarks.classify_latency --runs $S --task rotten_tomatoes --bundles $S/bundles/et-baked-nocache $b \
    --rounds 7 --examples 100 --work bench_runs/work --out $R/classify_latency_smol_g64.json > $W/latency-smol.log 2>&1
  tail -n 8 $W/latency-smol.log;;
*) echo "unknown stage $stage"; exit 2;;
esac; done
