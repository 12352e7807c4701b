#!/usr/bin/env bash
# ONNX classification bundles with each layer's self-attention as one com.microsoft
# MultiHeadAttention node (`calora-export --attention fused`, the new default) against the
# exporter's op-by-op attention (`--attention ops`), side by side in one run (CPU-X, 2026-12-07).
# Run from the repository root with the project's .venv/bin on PATH: `run.sh [STAGE...]`, stages
# export validate latency profile export2 validate2 latency2 profile2 [adapter8] (default: all but adapter8).
# export..profile ran 08:27-08:36 UTC with the fused attention only (W=bench_runs/fa): the .ort
# conversion still fused each residual Add + LayerNormalization into SkipLayerNormalization.
# A profile of that run found SkipLayerNormalization 4x slower than LayerNormalization, so the
# classification .ort conversion now leaves them unfused (calora.targets.onnx.CLASSIFY_UNFUSED);
# export2..profile2 export with that final code (W2=bench_runs/fa2) and time the old default
# (bench_runs/fa/*-ops: op-by-op attention, SkipLayerNormalization), the attention alone
# (bench_runs/fa/*-fused) and both changes (fa2/*-fused) side by side in one run, with the
# alternative converted to .ort the same way beside it (--unfused-alternative).
# Models: the 2026-12-05 main run's MiniLM rotten_tomatoes CA-LoRA at 4.7x (int4, the default
# route), and the int8 act:tensor route with half the FFN channels pruned
# (bench_runs/struct/ffn50e2, trained by docs/results/2026-12-07/ffn-pruning/run.sh).
set -uo pipefail
W=${W:-bench_runs/fa}
W2=${W2:-bench_runs/fa2}
R=docs/results/2026-12-07/fused-attention
STAGES=${*:-export validate latency profile export2 validate2 latency2 profile2}
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
declare -A RUNS=([int4-4.7x]=bench_runs/runs-4.7x [int8-ffn50]=bench_runs/struct/ffn50e2)
if has export; then
  for lvl in int4-4.7x int8-ffn50; do for m in baked swappable; do for a in fused ops; do
    [ -f $W/$lvl-$m-$a/manifest.json ] || \
      step calora-export --target onnx --mode $m --attention $a --task rotten_tomatoes --runs ${RUNS[$lvl]} --out $W/$lvl-$m-$a
  done; done; done
fi
if has validate; then
  for lvl in int4-4.7x int8-ffn50; do
    step calora-validate $W/$lvl-baked-fused $W/$lvl-swappable-fused --runs ${RUNS[$lvl]} --report $R/parity-$lvl --overwrite
  done
fi
if has latency; then
  B=""; for lvl in int4-4.7x int8-ffn50; do for m in baked swappable; do for a in ops fused; do B="$B $W/$lvl-$m-$a"; done; done; done
  step python -m benchmarks.classify_latency --runs bench_runs/runs-4.7x --task rotten_tomatoes --bundles $B \
    --rounds 5 --examples 100 --work $W/work --out $R/classify_latency_fused_attention.json
fi
if has profile; then
  P=$R/ort_profile_fused_attention.txt
  echo "# ONNX Runtime kernel time per op type (benchmarks.ort_profile), $(date -u '+%Y-%m-%d %H:%M UTC'), CPU-X" > $P
  for b in int4-4.7x-baked-ops int4-4.7x-baked-fused int8-ffn50-baked-ops int8-ffn50-baked-fused; do
    echo -e "\n## python -m benchmarks.ort_profile $W/$b/onnx/rotten_tomatoes.ort --inputs $W/work/rotten_tomatoes_64.npz --runs 60 --top 14" >> $P
    python -m benchmarks.ort_profile $W/$b/onnx/rotten_tomatoes.ort --inputs $W/work/rotten_tomatoes_64.npz --runs 60 --top 14 2>/dev/null >> $P
  done
fi
if has export2; then
  for lvl in int4-4.7x int8-ffn50; do for m in baked swappable; do for a in fused ops; do
    [ -f $W2/$lvl-$m-$a/manifest.json ] || \
      step calora-export --target onnx --mode $m --attention $a --task rotten_tomatoes --runs ${RUNS[$lvl]} --out $W2/$lvl-$m-$a
  done; done; done
fi
if has validate2; then
  for lvl in int4-4.7x int8-ffn50; do
    step calora-validate $W2/$lvl-baked-fused $W2/$lvl-swappable-fused --runs ${RUNS[$lvl]} --report $R/parity2-$lvl --overwrite
  done
fi
if has latency2; then
  B=""
  for m in baked swappable; do B="$B $W/int4-4.7x-$m-ops $W2/int4-4.7x-$m-fused"; done
  for m in baked swappable; do B="$B $W/int8-ffn50-$m-ops $W/int8-ffn50-$m-fused $W2/int8-ffn50-$m-ops $W2/int8-ffn50-$m-fused"; done
  step python -m benchmarks.classify_latency --runs bench_runs/runs-4.7x --task rotten_tomatoes --bundles $B \
    --unfused-alternative --rounds 5 --examples 100 --work $W/work --out $R/classify_latency_fused_attention_unfused_ln.json
fi
if has profile2; then
  P=$R/ort_profile_fused_attention_unfused_ln.txt
  echo "# ONNX Runtime kernel time per op type (benchmarks.ort_profile), $(date -u '+%Y-%m-%d %H:%M UTC'), CPU-X" > $P
  for b in $W/int8-ffn50-baked-ops $W/int8-ffn50-baked-fused $W2/int8-ffn50-baked-fused; do
    echo -e "\n## python -m benchmarks.ort_profile $b/onnx/rotten_tomatoes.ort --inputs $W/work/rotten_tomatoes_64.npz --runs 60 --top 14" >> $P
    python -m benchmarks.ort_profile $b/onnx/rotten_tomatoes.ort --inputs $W/work/rotten_tomatoes_64.npz --runs 60 --top 14 2>/dev/null >> $P
  done
  A=$(ls -d $W/work/rotten_tomatoes-*/ | head -1)
  for m in $A/merged_int8.onnx $A/merged_int8_unfused.ort; do
    echo -e "\n## python -m benchmarks.ort_profile $m --inputs $W/work/rotten_tomatoes_64.npz --runs 60 --top 14" >> $P
    python -m benchmarks.ort_profile $m --inputs $W/work/rotten_tomatoes_64.npz --runs 60 --top 14 2>/dev/null >> $P
  done
fi
if has adapter8; then  # 09:32 UTC: the int8 ffn:0.5 swappable bundle with int8 adapter files
  step calora-export --target onnx --mode swappable --adapter-dtype int8 --task rotten_tomatoes --runs ${RUNS[int8-ffn50]} \
    --out $W2/int8-ffn50-swappable-fused-a8
  step calora-validate $W2/int8-ffn50-swappable-fused-a8 --runs ${RUNS[int8-ffn50]} --report $R/parity2-int8-ffn50-adapter-int8
fi
