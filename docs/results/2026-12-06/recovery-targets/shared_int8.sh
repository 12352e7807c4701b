#!/bin/bash
# recovery on o_proj down_proj, ExecuTorch --mode shared with the int8 adapter (--adapter-dtype int8):
# export, validate, then decode speed beside the float32-adapter shared program, the baked default and
# the do-it-yourself model (each in its own process, 2 threads, 7 rounds)
source .venv/bin/activate
B=bench_runs/bundles-gen; R=docs/results/2026-12-06/recovery-targets
echo "== $(date -u +%H:%M:%S) export shared odown int8"
/usr/bin/time -f "%e s %M KB" calora-export --target executorch --mode shared --adapter-dtype int8 --task movie_dialog --runs bench_runs/rt/runs-odown-s0 --out $B/executorch-shared-dense-recodown-int8 > bench_runs/rt/export-shared-odown-int8.log 2>&1; tail -2 bench_runs/rt/export-shared-odown-int8.log
echo "== $(date -u +%H:%M:%S) validate"
calora-validate $B/executorch-shared-dense-recodown-int8 --runs bench_runs/rt/runs-odown-s0 --max-examples 8 --report $R/parity-executorch-shared-dense-recodown-int8 > bench_runs/rt/validate-shared-odown-int8.log 2>&1; echo "rc $?"; tail -1 bench_runs/rt/validate-shared-odown-int8.log
echo "== $(date -u +%H:%M:%S) gen_decode"
python -m benchmarks.gen_decode --bundles $B/executorch-baked-dense $B/executorch-shared-dense-recodown $B/executorch-shared-dense-recodown-int8 --runs bench_runs/runs-gen-dense --task movie_dialog --prompts 4 --new-tokens 16 --rounds 7 --quality-examples 64 --no-pytorch --work bench_runs/gen-alternative --threads 2 --out $R/gen_decode_shared_recodown_int8_threads2.json > bench_runs/rt/gen_decode_shared_int8.log 2>&1; tail -8 bench_runs/rt/gen_decode_shared_int8.log
echo "== done $(date -u +%H:%M:%S)"
