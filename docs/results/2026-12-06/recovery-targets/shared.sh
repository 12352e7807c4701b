#!/bin/bash
# recovery on o_proj down_proj in ExecuTorch's --mode shared layout (one backbone.ptd, a program per task)
source .venv/bin/activate
while ! grep -q "^real" /tmp/fc_suite3.log; do sleep 10; done  # after the fresh-clone suite
B=bench_runs/bundles-gen; R=docs/results/2026-12-06/recovery-targets
echo "== $(date -u +%H:%M:%S) export shared odown"
/usr/bin/time -f "%e s %M KB" calora-export --target executorch --mode shared --task movie_dialog --runs bench_runs/rt/runs-odown-s0 --out $B/executorch-shared-dense-recodown > bench_runs/rt/export-shared-odown.log 2>&1; tail -2 bench_runs/rt/export-shared-odown.log
echo "== $(date -u +%H:%M:%S) validate"
calora-validate $B/executorch-shared-dense-recodown --runs bench_runs/rt/runs-odown-s0 --max-examples 8 --report $R/parity-executorch-shared-dense-recodown > bench_runs/rt/validate-shared-odown.log 2>&1; tail -1 bench_runs/rt/validate-shared-odown.log
echo "== $(date -u +%H:%M:%S) gen_decode"
python -m benchmarks.gen_decode --bundles $B/executorch-baked-dense $B/executorch-baked-dense-recodown $B/executorch-shared-dense-recodown --runs bench_runs/runs-gen-dense --task movie_dialog --prompts 4 --new-tokens 16 --rounds 7 --quality-examples 64 --no-pytorch --work bench_runs/gen-alternative --threads 2 --out $R/gen_decode_shared_recodown_threads2.json > bench_runs/rt/gen_decode_shared.log 2>&1; tail -6 bench_runs/rt/gen_decode_shared.log
echo "== done $(date -u +%H:%M:%S)"
