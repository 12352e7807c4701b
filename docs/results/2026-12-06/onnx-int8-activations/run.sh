#!/bin/bash
# ONNX Runtime generative bundles with --activations int8 (MatMulNBits accuracy_level 4 in the body):
# export (default recovery layout baked and swappable, o_proj down_proj baked), validate, then decode
# speed beside the float-activation ONNX bundles, the ExecuTorch programs and the do-it-yourself model
# (2 threads, each configuration in its own process, 7 rounds), twice
source .venv/bin/activate
B=bench_runs/bundles-gen; R=docs/results/2026-12-06/onnx-int8-activations; L=bench_runs/rt
ex() { echo "== $(date -u +%H:%M:%S) export $1"; /usr/bin/time -f "%e s %M KB" calora-export --target onnx "${@:2}" --activations int8 --out $B/$1 > $L/export-$1.log 2>&1; tail -2 $L/export-$1.log; }
va() { echo "== $(date -u +%H:%M:%S) validate $1"; calora-validate $B/$1 --runs $2 --max-examples 8 --report $R/parity-$1 > $L/validate-$1.log 2>&1; echo "rc $?"; tail -1 $L/validate-$1.log; }
ex onnx-baked-dense-int8act --mode baked --task movie_dialog --runs bench_runs/runs-gen-dense
ex onnx-swappable-dense-int8act --mode swappable --task movie_dialog --runs bench_runs/runs-gen-dense
ex onnx-baked-dense-recodown-int8act --mode baked --task movie_dialog --runs bench_runs/rt/runs-odown-s0
va onnx-baked-dense-int8act bench_runs/runs-gen-dense
va onnx-swappable-dense-int8act bench_runs/runs-gen-dense
va onnx-baked-dense-recodown-int8act bench_runs/rt/runs-odown-s0
for run in 1 2; do
echo "== $(date -u +%H:%M:%S) gen_decode run $run"
python -m benchmarks.gen_decode --bundles $B/onnx-baked-dense $B/onnx-baked-dense-int8act $B/onnx-swappable-dense-int8act $B/onnx-baked-dense-recodown $B/onnx-baked-dense-recodown-int8act $B/executorch-baked-dense $B/executorch-baked-dense-recodown --runs bench_runs/runs-gen-dense --task movie_dialog --prompts 4 --new-tokens 16 --rounds 7 --quality-examples 64 --no-pytorch --work bench_runs/gen-alternative --threads 2 --out $R/gen_decode_int8_activations_threads2_run$run.json > $L/gen_decode_int8act_run$run.log 2>&1; tail -10 $L/gen_decode_int8act_run$run.log
done
echo "== done $(date -u +%H:%M:%S)"
