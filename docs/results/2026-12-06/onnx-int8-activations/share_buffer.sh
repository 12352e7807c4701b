#!/bin/bash
# genai_config past_present_share_buffer true (one cache buffer per layer, written in place by
# GroupQueryAttention, as the builder sets it) against the growing cache of the earlier exports:
# the int8-activation bundles re-exported with it (baked and swappable), validated, then timed beside
# the growing-cache export of run.sh and the do-it-yourself model at 16 and 64 new tokens
source .venv/bin/activate
B=bench_runs/bundles-gen; R=docs/results/2026-12-06/onnx-int8-activations; L=bench_runs/rt
for mode in baked swappable; do
  n=onnx-$mode-dense-int8act-sharebuf
  echo "== $(date -u +%H:%M:%S) export $n"
  /usr/bin/time -f "%e s %M KB" calora-export --target onnx --mode $mode --task movie_dialog --runs bench_runs/runs-gen-dense --activations int8 --out $B/$n > $L/export-$n.log 2>&1; tail -1 $L/export-$n.log
  calora-validate $B/$n --runs bench_runs/runs-gen-dense --max-examples 8 --report $R/parity-$n > $L/validate-$n.log 2>&1; echo "validate rc $?"; tail -1 $L/validate-$n.log
done
for tokens in 16 64; do
echo "== $(date -u +%H:%M:%S) gen_decode $tokens new tokens"
python -m benchmarks.gen_decode --bundles $B/onnx-baked-dense-int8act $B/onnx-baked-dense-int8act-sharebuf $B/onnx-swappable-dense-int8act $B/onnx-swappable-dense-int8act-sharebuf --runs bench_runs/runs-gen-dense --task movie_dialog --prompts 4 --new-tokens $tokens --rounds 7 --quality-examples 64 --no-pytorch --work bench_runs/gen-alternative --threads 2 --out $R/gen_decode_share_buffer_new$tokens.json > $L/gen_decode_share_$tokens.log 2>&1; tail -7 $L/gen_decode_share_$tokens.log
done
echo "== done $(date -u +%H:%M:%S)"
