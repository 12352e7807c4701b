#!/bin/bash
source .venv/bin/activate
while pgrep -f export_all.sh >/dev/null; do sleep 10; done
B=bench_runs/bundles-gen; R=docs/results/2026-12-06/recovery-targets
echo "== $(date -u +%H:%M:%S) onnx norecover"
[ -f $B/onnx-baked-dense-norecover/manifest.json ] || /usr/bin/time -f "%e s" calora-export --target onnx --mode baked --task movie_dialog --runs bench_runs/runs-gen-dense-norecover --out $B/onnx-baked-dense-norecover > bench_runs/rt/export-onnx-none.log 2>&1
echo "== $(date -u +%H:%M:%S) validate et mlp"
/usr/bin/time -f "%e s" calora-validate $B/executorch-baked-dense-recmlp --runs bench_runs/rt/runs-mlp-s0 --max-examples 8 --report $R/parity-executorch-baked-dense-recmlp > bench_runs/rt/validate-et-mlp.log 2>&1; tail -2 bench_runs/rt/validate-et-mlp.log
echo "== $(date -u +%H:%M:%S) validate onnx mlp"
/usr/bin/time -f "%e s" calora-validate $B/onnx-baked-dense-recmlp --runs bench_runs/rt/runs-mlp-s0 --max-examples 8 --report $R/parity-onnx-baked-dense-recmlp > bench_runs/rt/validate-onnx-mlp.log 2>&1; tail -2 bench_runs/rt/validate-onnx-mlp.log
echo "== $(date -u +%H:%M:%S) gen_decode"
python -m benchmarks.gen_decode --bundles $B/executorch-baked-dense $B/executorch-baked-dense-recmlp $B/executorch-baked-dense-recodown $B/executorch-baked-dense-recdown $B/executorch-baked-dense-norecover $B/onnx-baked-dense $B/onnx-baked-dense-recmlp $B/onnx-baked-dense-recodown $B/onnx-baked-dense-recdown $B/onnx-baked-dense-norecover --runs bench_runs/runs-gen-dense --task movie_dialog --prompts 4 --new-tokens 16 --rounds 7 --quality-examples 64 --work bench_runs/gen-alternative --threads 2 --out $R/gen_decode_recovery_targets_threads2.json > bench_runs/rt/gen_decode.log 2>&1; tail -16 bench_runs/rt/gen_decode.log
echo "== done $(date -u +%H:%M:%S)"
