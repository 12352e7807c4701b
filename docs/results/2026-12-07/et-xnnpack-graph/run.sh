#!/usr/bin/env bash
# ExecuTorch classification with attention and norms written as XNNPACK operators (`--attention
# fused`, the new default for --target executorch) against the model's own graph (`--attention ops`,
# what every ExecuTorch classification bundle was before), MiniLM rotten_tomatoes, CPU-X,
# 2026-12-07. Run from the repository root with .venv/bin on PATH: `run.sh [STAGE...]`, stages
# train export validate latency profile smol latency2 (default: all).
# train (10:31-10:48 UTC): the default recipe (teacher + CA-LoRA at int4 4.7x), then the int8 FFN-
#   pruned route ExecuTorch can run (per-token activations, XNNPACK's scheme; `act:tensor` is
#   ONNX Runtime's and ExecuTorch refuses it), 2 epochs, the same teacher.
set -uo pipefail
R=docs/results/2026-12-07/et-xnnpack-graph
A=bench_runs/runs-4.7x
F=bench_runs/et-ffn
T=$A/rotten_tomatoes/teacher
STAGES=${*:-train export validate latency profile smol latency2}
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
if has train; then
  [ -f $A/rotten_tomatoes/calora/metrics.json ] || step calora-train --task rotten_tomatoes --out $A
  [ -f $F/rotten_tomatoes/calora/metrics.json ] || step calora-train --task rotten_tomatoes \
    --compression int8+ffn:0.5+emb:int4 --teacher $T --epochs 2 --out $F
  cp $F/rotten_tomatoes/calora/metrics.json $R/train_int8_ffn50_metrics.json
fi
if has export; then
  for S in $A $F; do
    for m in baked swappable; do
      for a in ops fused; do
        [ -f $S/bundles/et-$m-$a/manifest.json ] || step calora-export --target executorch --mode $m --attention $a \
          --task rotten_tomatoes --runs $S --out $S/bundles/et-$m-$a
      done
    done
  done
fi
if has validate; then
  for S in $A $F; do
    step calora-validate $S/bundles/et-baked-ops $S/bundles/et-swappable-ops $S/bundles/et-baked-fused \
      $S/bundles/et-swappable-fused --runs $S --report $R/parity-$(basename $S) --overwrite
  done
fi
if has latency; then
  step python -m benchmarks.classify_latency --runs $A --task rotten_tomatoes --bundles \
    $A/bundles/et-baked-ops $A/bundles/et-swappable-ops $A/bundles/et-baked-fused $A/bundles/et-swappable-fused \
    $F/bundles/et-baked-ops $F/bundles/et-swappable-ops $F/bundles/et-baked-fused $F/bundles/et-swappable-fused \
    --unfused-alternative --rounds 5 --examples 100 --work bench_runs/work \
    --out $R/classify_latency_et_xnnpack_graph.json
fi
if has profile; then
  for b in $F/bundles/et-baked-ops $F/bundles/et-baked-fused; do
    step python -m benchmarks.et_profile $b --task rotten_tomatoes --runs 60 --top 20 --by-operator \
      --out $R/et_profile_int8_ffn50_$(basename $b).json
  done
fi
# smol: SmolLM2-135M as the classifier (grouped-query attention: 9 query heads over 3 key heads,
#   RMSNorm), the default recipe (teacher + CA-LoRA at int4 5.7x; the training ran by hand from
#   11:16 UTC with this command), both graphs exported baked, validated and timed.
W=bench_runs/smol-cls/runs-4.7x
if has smol; then
  [ -f $W/rotten_tomatoes/calora/metrics.json ] || step calora-train --backbone smollm2-135m --task rotten_tomatoes --out $W
  cp $W/rotten_tomatoes/calora/metrics.json $R/train_smollm2_metrics.json
  for a in ops fused; do
    [ -f $W/bundles/et-baked-$a/manifest.json ] || step calora-export --target executorch --mode baked --attention $a \
      --task rotten_tomatoes --runs $W --out $W/bundles/et-baked-$a
  done
  step calora-validate $W/bundles/et-baked-ops $W/bundles/et-baked-fused --runs $W --report $R/parity-smollm2 --overwrite
  step python -m benchmarks.classify_latency --runs $W --task rotten_tomatoes --bundles $W/bundles/et-baked-ops \
    $W/bundles/et-baked-fused --rounds 5 --examples 100 --work bench_runs/work \
    --out $R/classify_latency_smollm2_et_xnnpack_graph.json
fi
# latency2: MiniLM again, the new graphs only beside the alternative, on a quieter machine than the
#   first run (whose PyTorch rounds spread from 14.8 to 22.4 ms), to settle swappable against baked.
if has latency2; then
  step python -m benchmarks.classify_latency --runs $A --task rotten_tomatoes --bundles \
    $A/bundles/et-baked-fused $A/bundles/et-swappable-fused $F/bundles/et-baked-fused $F/bundles/et-swappable-fused \
    --unfused-alternative --rounds 5 --examples 100 --work bench_runs/work \
    --out $R/classify_latency_et_xnnpack_graph_2.json
fi
