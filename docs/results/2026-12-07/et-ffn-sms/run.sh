#!/usr/bin/env bash
# The ExecuTorch int8 FFN-pruned route (`--compression int8+ffn:0.5+emb:int4`, per-token
# activations, 2 epochs) on a second task, sms_spam, seed 0: teacher and CA-LoRA trained, baked and
# swappable ExecuTorch bundles exported, validated on the full test split and timed beside the
# do-it-yourself alternative, CPU-X, 2026-12-07. Run from the repository root with .venv/bin on
# PATH: `run.sh [STAGE...]`, stages train export validate latency.
set -uo pipefail
R=docs/results/2026-12-07/et-ffn-sms
S=bench_runs/et-ffn-sms
STAGES=${*:-train export validate latency}
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
if has train; then
  [ -f $S/sms_spam/calora/metrics.json ] || step calora-train --task sms_spam \
    --compression int8+ffn:0.5+emb:int4 --epochs 2 --out $S
  cp $S/sms_spam/calora/metrics.json $R/train_sms_spam_int8_ffn50_metrics.json
fi
if has export; then
  for m in baked swappable; do
    [ -f $S/bundles/et-$m/manifest.json ] || step calora-export --target executorch --mode $m \
      --task sms_spam --runs $S --out $S/bundles/et-$m
  done
fi
if has validate; then
  step calora-validate $S/bundles/et-baked $S/bundles/et-swappable --runs $S --report $R/parity --overwrite
fi
if has latency; then
  step python -m benchmarks.classify_latency --runs $S --task sms_spam --bundles $S/bundles/et-baked \
    $S/bundles/et-swappable --rounds 5 --examples 100 --work bench_runs/work-sms \
    --out $R/classify_latency_sms_spam_et_int8_ffn50.json
fi
# latency, second run (15:43-15:45 UTC, by hand): the latency stage with --out $R/classify_latency_sms_spam_et_int8_ffn50_2.json
# rotten_tomatoes in the same hour (15:46-15:48 UTC, by hand): python -m benchmarks.classify_latency --runs bench_runs/et-ffn --task rotten_tomatoes --bundles bench_runs/et-ffn/bundles/et-baked-fused bench_runs/et-ffn/bundles/et-swappable-fused --rounds 5 --examples 100 --work bench_runs/work --out $R/classify_latency_rotten_tomatoes_et_int8_ffn50_same_hour.json
# profiles (15:50 UTC, by hand): python -m benchmarks.et_profile bench_runs/et-ffn/bundles/et-$m-fused --task rotten_tomatoes --runs 60 --top 12 --by-operator --out $R/et_profile_rotten_tomatoes_int8_ffn50_$m.json, m in baked swappable
