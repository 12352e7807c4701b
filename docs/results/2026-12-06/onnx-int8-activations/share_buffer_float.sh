#!/bin/bash
# the default export (float activations) with past_present_share_buffer true: re-exported, validated
# with the float-activation gates (KV cache at half a logit step), timed beside the growing-cache
# export of the same task (bench_runs/bundles-gen/onnx-baked-dense) and the do-it-yourself model
source .venv/bin/activate
B=bench_runs/bundles-gen; R=docs/results/2026-12-06/onnx-int8-activations; L=bench_runs/rt
n=onnx-baked-dense-sharebuf
echo "== $(date -u +%H:%M:%S) export $n"
/usr/bin/time -f "%e s %M KB" calora-export --target onnx --mode baked --task movie_dialog --runs bench_runs/runs-gen-dense --out $B/$n > $L/export-$n.log 2>&1; tail -1 $L/export-$n.log
calora-validate $B/$n --runs bench_runs/runs-gen-dense --max-examples 8 --report $R/parity-$n > $L/validate-$n.log 2>&1; echo "validate rc $?"; tail -1 $L/validate-$n.log
echo "== $(date -u +%H:%M:%S) gen_decode"
python -m benchmarks.gen_decode --bundles $B/onnx-baked-dense $B/$n --runs bench_runs/runs-gen-dense --task movie_dialog --prompts 4 --new-tokens 16 --rounds 7 --quality-examples 64 --no-pytorch --work bench_runs/gen-alternative --threads 2 --out $R/gen_decode_share_buffer_float.json > $L/gen_decode_share_float.log 2>&1; tail -4 $L/gen_decode_share_float.log
echo "== done $(date -u +%H:%M:%S)"
