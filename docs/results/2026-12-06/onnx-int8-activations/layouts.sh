#!/bin/bash
# every recovery layout of "Recovery on fewer layers" on both runtimes in the same runs: ONNX with
# --activations int8 (the MLP, down_proj and no-recovery layouts exported and validated here; every
# linear and o_proj down_proj come from run.sh) and the baked ExecuTorch programs, beside the
# do-it-yourself model; 2 threads, every configuration in its own process, 7 rounds, twice
source .venv/bin/activate
B=bench_runs/bundles-gen; R=docs/results/2026-12-06/onnx-int8-activations; L=bench_runs/rt
one() {
  echo "== $(date -u +%H:%M:%S) export $1"
  /usr/bin/time -f "%e s %M KB" calora-export --target onnx --mode baked --task movie_dialog --runs $2 --activations int8 --out $B/$1 > $L/export-$1.log 2>&1; tail -1 $L/export-$1.log
  calora-validate $B/$1 --runs $2 --max-examples 8 --report $R/parity-$1 > $L/validate-$1.log 2>&1; echo "validate rc $?"; tail -1 $L/validate-$1.log
}
one onnx-baked-dense-recmlp-int8act bench_runs/rt/runs-mlp-s0
one onnx-baked-dense-recdown-int8act bench_runs/rt/runs-down-s0
one onnx-baked-dense-norecover-int8act bench_runs/runs-gen-dense-norecover
for run in 1 2; do
echo "== $(date -u +%H:%M:%S) gen_decode run $run"
python -m benchmarks.gen_decode --bundles $B/executorch-baked-dense $B/executorch-baked-dense-recmlp $B/executorch-baked-dense-recodown $B/executorch-baked-dense-recdown $B/executorch-baked-dense-norecover $B/onnx-baked-dense-int8act $B/onnx-baked-dense-recmlp-int8act $B/onnx-baked-dense-recodown-int8act $B/onnx-baked-dense-recdown-int8act $B/onnx-baked-dense-norecover-int8act --runs bench_runs/runs-gen-dense --task movie_dialog --prompts 4 --new-tokens 16 --rounds 7 --quality-examples 64 --no-pytorch --work bench_runs/gen-alternative --threads 2 --out $R/gen_decode_layouts_threads2_run$run.json > $L/gen_decode_layouts_run$run.log 2>&1; tail -12 $L/gen_decode_layouts_run$run.log
done
echo "== done $(date -u +%H:%M:%S)"
