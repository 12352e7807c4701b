#!/usr/bin/env bash
# ExecuTorch `--mode shared` for classification: the int8 FFN-pruned route's two trained tasks
# (rotten_tomatoes from bench_runs/et-ffn, sms_spam from bench_runs/et-ffn-sms; both trained on the
# same compressed backbone, fingerprint sha256:0390e662..., so one runs folder links both) exported
# as one shared bundle (one backbone.ptd, a program per task), validated on both full test splits
# and timed beside the baked and swappable bundles of the same trained models and the do-it-yourself
# alternative, CPU-X, 2026-12-07. Run from the repository root with .venv/bin on PATH:
# `run.sh [STAGE...]`, stages export validate latency export-more validate-int8 switch latency2.
set -uo pipefail
R=docs/results/2026-12-07/et-shared-cls
S=bench_runs/et-ffn-both
STAGES=${*:-export validate latency export-more validate-int8 switch latency2}
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
mkdir -p $S
ln -sfn ../et-ffn/rotten_tomatoes $S/rotten_tomatoes
ln -sfn ../et-ffn-sms/sms_spam $S/sms_spam
if has export; then
  [ -f $S/bundles/et-shared/manifest.json ] || step calora-export --target executorch --mode shared \
    --task rotten_tomatoes,sms_spam --runs $S --out $S/bundles/et-shared
  cp $S/bundles/et-shared/manifest.json $R/manifest_et_shared.json
fi
if has validate; then
  step calora-validate $S/bundles/et-shared --runs $S --report $R/parity --overwrite
fi
if has latency; then
  step python -m benchmarks.classify_latency --runs bench_runs/et-ffn --task rotten_tomatoes \
    --bundles bench_runs/et-ffn/bundles/et-baked-fused bench_runs/et-ffn/bundles/et-swappable-fused $S/bundles/et-shared \
    --rounds 5 --examples 100 --work bench_runs/work --out $R/classify_latency_rotten_tomatoes.json
  step python -m benchmarks.classify_latency --runs bench_runs/et-ffn-sms --task sms_spam \
    --bundles bench_runs/et-ffn-sms/bundles/et-baked bench_runs/et-ffn-sms/bundles/et-swappable $S/bundles/et-shared \
    --rounds 5 --examples 100 --work bench_runs/work-sms --out $R/classify_latency_sms_spam.json
fi
if has export-more; then  # the int8-adapter shared bundle, and two-task baked / swappable bundles for the switch timing
  [ -f $S/bundles/et-shared-int8/manifest.json ] || step calora-export --target executorch --mode shared \
    --adapter-dtype int8 --task rotten_tomatoes,sms_spam --runs $S --out $S/bundles/et-shared-int8
  cp $S/bundles/et-shared-int8/manifest.json $R/manifest_et_shared_int8.json
  for m in baked swappable; do
    [ -f $S/bundles/et-$m/manifest.json ] || step calora-export --target executorch --mode $m \
      --task rotten_tomatoes,sms_spam --runs $S --out $S/bundles/et-$m
  done
fi
if has validate-int8; then
  step calora-validate $S/bundles/et-shared-int8 --runs $S --report $R/parity-int8 --overwrite
fi
if has switch; then
  step python -m benchmarks.task_switch --swappable $S/bundles/et-swappable --baked $S/bundles/et-baked \
    --shared $S/bundles/et-shared --runs $S --rounds 5 --switches 20 --work bench_runs/work \
    --out $R/task_switch_et_shared.json
fi
if has latency2; then  # both tasks again, 9 rounds, with the int8-adapter shared bundle
  for t in rotten_tomatoes sms_spam; do
    W=bench_runs/work; [ $t = sms_spam ] && W=bench_runs/work-sms  # the alternative's models, built once per task
    step python -m benchmarks.classify_latency --runs $S --task $t --bundles $S/bundles/et-baked \
      $S/bundles/et-swappable $S/bundles/et-shared $S/bundles/et-shared-int8 --rounds 9 --examples 100 \
      --work $W --out $R/classify_latency_${t}_9rounds.json
  done
fi
