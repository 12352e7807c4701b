#!/bin/bash
# calora's fastest ONNX generative configuration measured so far: recovery on o_proj down_proj,
# --activations int8, the shared cache buffer (the current export); validated, then timed beside
# the same layout's growing-cache int8 export, the baked ExecuTorch programs and the do-it-yourself model
source .venv/bin/activate
B=bench_runs/bundles-gen; R=docs/results/2026-12-06/onnx-int8-activations; L=bench_runs/rt
n=onnx-baked-dense-recodown-int8act-sharebuf
echo "== $(date -u +%H:%M:%S) export $n"
/usr/bin/time -f "%e s %M KB" calora-export --target onnx --mode baked --task movie_dialog --runs bench_runs/rt/runs-odown-s0 --activations int8 --out $B/$n > $L/export-$n.log 2>&1; tail -1 $L/export-$n.log
calora-validate $B/$n --runs bench_runs/rt/runs-odown-s0 --max-examples 8 --report $R/parity-$n > $L/validate-$n.log 2>&1; echo "validate rc $?"; tail -1 $L/validate-$n.log
for run in 1 2; do
echo "== $(date -u +%H:%M:%S) gen_decode run $run"
python -m benchmarks.gen_decode --bundles $B/onnx-baked-dense-recodown-int8act $B/$n $B/onnx-baked-dense-int8act-sharebuf $B/executorch-baked-dense $B/executorch-baked-dense-recodown --runs bench_runs/runs-gen-dense --task movie_dialog --prompts 4 --new-tokens 16 --rounds 7 --quality-examples 64 --no-pytorch --work bench_runs/gen-alternative --threads 2 --out $R/gen_decode_fast_onnx_run$run.json > $L/gen_decode_fast_onnx_$run.log 2>&1; tail -7 $L/gen_decode_fast_onnx_$run.log
done
echo "== done $(date -u +%H:%M:%S)"
