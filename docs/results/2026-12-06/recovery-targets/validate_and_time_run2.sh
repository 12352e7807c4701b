#!/bin/bash
source .venv/bin/activate
while pgrep -f "rt/train_seed2.sh" >/dev/null; do sleep 10; done
B=bench_runs/bundles-gen; R=docs/results/2026-12-06/recovery-targets
for v in odown down; do
  echo "== $(date -u +%H:%M:%S) validate onnx $v"
  calora-validate $B/onnx-baked-dense-rec$v --runs bench_runs/rt/runs-$v-s0 --max-examples 8 --report $R/parity-onnx-baked-dense-rec$v > bench_runs/rt/validate-onnx-$v.log 2>&1; tail -1 bench_runs/rt/validate-onnx-$v.log
done
echo "== $(date -u +%H:%M:%S) validate onnx none"
calora-validate $B/onnx-baked-dense-norecover --runs bench_runs/runs-gen-dense-norecover --max-examples 8 --report $R/parity-onnx-baked-dense-norecover > bench_runs/rt/validate-onnx-none.log 2>&1; tail -1 bench_runs/rt/validate-onnx-none.log
echo "== $(date -u +%H:%M:%S) gen_decode run 2"
python -m benchmarks.gen_decode --bundles $B/executorch-baked-dense $B/executorch-baked-dense-recmlp $B/executorch-baked-dense-recodown $B/executorch-baked-dense-recdown $B/executorch-baked-dense-norecover $B/onnx-baked-dense $B/onnx-baked-dense-recmlp $B/onnx-baked-dense-recodown $B/onnx-baked-dense-recdown $B/onnx-baked-dense-norecover --runs bench_runs/runs-gen-dense --task movie_dialog --prompts 4 --new-tokens 16 --rounds 7 --quality-examples 0 --work bench_runs/gen-alternative --threads 2 --out $R/gen_decode_recovery_targets_threads2_run2.json > bench_runs/rt/gen_decode2.log 2>&1; tail -14 bench_runs/rt/gen_decode2.log
echo "== done $(date -u +%H:%M:%S)"
