#!/bin/bash
# ExecuTorch generative programs with the norms and rotary embedding inside XNNPACK (2026-12-07).
# Stages: train | export | validate | time | profile. Run from the repository root: bash run.sh STAGE
# "after" was exported with graph.patch (in this folder) applied to b14ce97. It was not adopted (no faster
# decode, docs/RESULTS.md section 5) and is not in the package: to repeat it, `git apply` the patch first.
# The timing files were renamed gen_decode_runN.json -> gen_decode_graph_runN.json after the runs.
set -e
source .venv/bin/activate
W=bench_runs/gen-graph; R=docs/results/2026-12-07/et-gen-graph
common="--backbone smollm2-135m --task movie_dialog --batch-size 8 --max-train-examples 320 --max-eval-examples 200 --compression int4:g32+emb:int8 --seed 0"
case "$1" in
train)  # teacher + CA-LoRA (recovery on every linear, the default), then o_proj/down_proj recovery on the same teacher
  echo "== $(date -u +%H:%M:%S) train all"
  /usr/bin/time -f "%e s" calora-train $common --out $W/runs-all > $W/train-all.log 2>&1; tail -3 $W/train-all.log
  echo "== $(date -u +%H:%M:%S) train odown"
  /usr/bin/time -f "%e s" calora-train $common --teacher $W/runs-all/movie_dialog/teacher --recovery-targets o_proj down_proj --out $W/runs-odown > $W/train-odown.log 2>&1; tail -3 $W/train-odown.log
  echo "== done $(date -u +%H:%M:%S)";;
export)  # baked programs of both runs, by the parent commit's code (before: /tmp/before is a worktree of
         # b14ce97, put first on the path by PYTHONPATH=/tmp/before_pkg, whose calora/* link to its folders) and by this one
  for v in all odown; do
    echo "== $(date -u +%H:%M:%S) export $v before"
    [ -f $W/et-baked-$v-before/manifest.json ] || PYTHONPATH=/tmp/before_pkg /usr/bin/time -f "%e s %M KB" python -m calora.export.cli --target executorch --mode baked --task movie_dialog --runs $W/runs-$v --out $W/et-baked-$v-before > $W/export-$v-before.log 2>&1
    tail -2 $W/export-$v-before.log
    echo "== $(date -u +%H:%M:%S) export $v after"
    [ -f $W/et-baked-$v/manifest.json ] || /usr/bin/time -f "%e s %M KB" calora-export --target executorch --mode baked --task movie_dialog --runs $W/runs-$v --out $W/et-baked-$v > $W/export-$v.log 2>&1
    tail -2 $W/export-$v.log
  done
  echo "== done $(date -u +%H:%M:%S)";;
validate)  # the new programs against PyTorch in ExecuTorch's runtime (the old code's programs were validated on 2026-12-06)
  for v in all odown; do
    echo "== $(date -u +%H:%M:%S) validate $v"
    calora-validate $W/et-baked-$v --runs $W/runs-$v --max-examples 8 --report $R/parity-et-baked-$v > $W/validate-$v.log 2>&1 || true
    tail -1 $W/validate-$v.log
  done
  echo "== done $(date -u +%H:%M:%S)";;
time)  # before and after, beside the do-it-yourself model, every configuration in its own process, 2 threads each;
       # bash run.sh time run1 (7 rounds, perplexity on 64 examples), bash run.sh time runN 11 0 (11 rounds, speed only)
  echo "== $(date -u +%H:%M:%S) gen_decode ${2:-run1}"
  python -m benchmarks.gen_decode --bundles $W/et-baked-all-before $W/et-baked-all $W/et-baked-odown-before $W/et-baked-odown \
    --runs $W/runs-all --task movie_dialog --prompts 4 --new-tokens 16 --rounds ${3:-7} --quality-examples ${4:-64} \
    --work $W/gen-alternative --threads 2 --out $R/gen_decode_graph_${2:-run1}.json > $W/gen_decode_${2:-run1}.log 2>&1
  tail -14 $W/gen_decode_${2:-run1}.log
  echo "== done $(date -u +%H:%M:%S)";;
profile)  # ExecuTorch's event tracer on the before and after programs: delegate calls and portable kernels per step
  for b in et-baked-all-before et-baked-all; do
    echo "== $(date -u +%H:%M:%S) et_profile $b"
    python -m benchmarks.et_profile $W/$b --task movie_dialog --decode-steps 16 --top 40 --threads 2 --out $R/et_profile_$b.json > $W/et_profile_$b.log 2>&1
    tail -3 $W/et_profile_$b.log
  done;;
profile2)  # the same after et_profile also timed the calls untraced (traced / untraced), twice each, alternating
  for r in 1 2; do for b in et-baked-all-before et-baked-all; do
    echo "== $(date -u +%H:%M:%S) et_profile $b round $r"
    python -m benchmarks.et_profile $W/$b --task movie_dialog --decode-steps 16 --top 40 --threads 2 --out $R/et_profile2_${b}_r$r.json > $W/et_profile2_${b}_r$r.log 2>&1
    grep untraced $W/et_profile2_${b}_r$r.log
  done; done;;
  # run again at 20:14; its files were renamed et_profile3_* afterwards, and the 20:01 ones restored from git
profile1t)  # the same at one XNNPACK thread
  for r in 1 2; do for b in et-baked-all-before et-baked-all; do
    echo "== $(date -u +%H:%M:%S) et_profile $b 1 thread round $r"
    python -m benchmarks.et_profile $W/$b --task movie_dialog --decode-steps 16 --top 40 --threads 1 --out $R/et_profile1t_${b}_r$r.json > $W/et_profile1t_${b}_r$r.log 2>&1
    grep untraced $W/et_profile1t_${b}_r$r.log
  done; done;;
esac
