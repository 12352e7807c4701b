#!/usr/bin/env bash
# SmolLM2-135M-Instruct as a classification backbone on rotten_tomatoes (CPU-X, 2026-12-06).
# Run from the repository root with the project's .venv/bin on PATH: `run.sh [STAGE...]`, stages in
# the order they ran: train export ablation validate 6x latency seeds latency2 single int8act single2
# single3 seeds6x export6x latency6x int8route latencyint8 singleseeds
# recoveryseeds noisefloor (default: all; train, export, int8act and export6x skip a
# finished model or bundle). latency to single2 ran later that evening, 21:08-23:53 UTC, in the next
# session; single3 and seeds6x on 2026-12-07, 00:05-01:37 UTC, export6x and latency6x after them;
# int8route, latencyint8 and singleseeds from 02:46 UTC the same day, in the next session, then
# int8_route_noise_probe.py (its command in its docstring), 03:44-04:42 UTC beside singleseeds.
# W is the work folder. The `parity-*-before` reports come from the `export` stage's calora-validate
# calls (the same commands, --report parity-TARGET-baked) before the change to calora-validate's
# references and int8 gates; `validate` is the run after it.
set -uo pipefail
W=${W:-bench_runs/smol-cls}
R=docs/results/2026-12-06/smollm2-classify
B=smollm2-135m
T=$W/runs-4.7x/rotten_tomatoes/teacher
L6=int4:g32+sparse:0.5+emb:int4
STAGES=${*:-train export ablation validate 6x latency seeds latency2 single int8act single2 single3 seeds6x export6x latency6x int8route latencyint8 singleseeds recoveryseeds noisefloor}
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; local rc=$?; echo "== $(date -u +%H:%M:%S) rc=$rc"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }

# teacher (LoRA on the uncompressed backbone) and CA-LoRA at the default compression
if has train && [ ! -f $W/runs-4.7x/rotten_tomatoes/calora/metrics.json ]; then
  step calora-train --backbone $B --task rotten_tomatoes --out $W/runs-4.7x
fi
# the deployed artifacts of that CA-LoRA
if has export; then
  for t in onnx executorch; do
    [ -f $W/bundles/$t-baked/manifest.json ] || \
      step calora-export --target $t --mode baked --task rotten_tomatoes --runs $W/runs-4.7x --out $W/bundles/$t-baked
  done
fi
# baselines on the same teacher and level, and the inherited LoRA scored untrained
if has ablation; then
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --teacher $T --out $W/ablation-4.7x \
    --seeds 0 --results $R --variants 'compressed + LoRA from scratch' 'compressed + LoftQ-initialised LoRA' \
    'compressed + inherited LoRA, untrained'
fi
# both artifacts on the whole test split, in their runtimes
if has validate; then
  step calora-validate $W/bundles/onnx-baked $W/bundles/executorch-baked --report $R/parity-baked --overwrite
fi
# the 6x level: int4 token embeddings, same teacher
if has 6x; then
  [ -f $W/runs-6x/rotten_tomatoes/calora/metrics.json ] || \
    step calora-train --backbone $B --task rotten_tomatoes --compression $L6 --teacher $T --out $W/runs-6x
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --compression $L6 --teacher $T \
    --out $W/ablation-6x --seeds 0 --results $R --variants 'compressed + LoRA from scratch' \
    'compressed + inherited LoRA, untrained'
fi
# batch-1 latency, size and accuracy of both artifacts against PyTorch eager fp32 and the
# do-it-yourself route (the teacher LoRA merged into the fp32 backbone, ONNX, quantize_dynamic int8)
if has latency; then
  step python -m benchmarks.classify_latency --runs $W/runs-4.7x --task rotten_tomatoes \
    --bundles $W/bundles/onnx-baked $W/bundles/executorch-baked --work $W/latency-work \
    --out $R/classify_latency_smollm2_rotten_tomatoes.json
fi
# seeds 1 and 2 of LoRA from scratch and CA-LoRA at the default level (same teacher, seed 0), as
# MiniLM's seeds were run
if has seeds; then
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --teacher $T --out $W/seeds-4.7x \
    --seeds 1 2 --results $R/seeds --variants 'compressed + LoRA from scratch' 'compressed + CA-LoRA'
fi
# single ablations at the default level, seed 0, same teacher: does each part of CA-LoRA matter on
# this backbone, where the inherited LoRA alone is at chance? Recovery only (the part that costs run
# time); the other two were not run, for time.
if has single; then
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --teacher $T --out $W/single-4.7x \
    --seeds 0 --results $R/single --variants 'CA-LoRA without recover'
fi
# the same benchmark again with the stronger do-it-yourself variant (quantize_dynamic per channel)
# and the ONNX artifact's graph at MatMulNBits accuracy_level 4 (int8 activations), side by side
if has latency2; then
  step python -m benchmarks.classify_latency --runs $W/runs-4.7x --task rotten_tomatoes \
    --bundles $W/bundles/onnx-baked $W/bundles/executorch-baked --work $W/latency-work \
    --per-channel-alternative --onnx-int8-activations \
    --out $R/classify_latency_smollm2_rotten_tomatoes_2.json
fi
# the ONNX bundle exported with --activations int8 (MatMulNBits accuracy_level 4) and validated on
# the whole test split with the int8-activation gates
if has int8act; then
  [ -f $W/bundles/onnx-baked-int8act/manifest.json ] || \
    step calora-export --target onnx --mode baked --task rotten_tomatoes --runs $W/runs-4.7x \
      --activations int8 --out $W/bundles/onnx-baked-int8act
  step calora-validate $W/bundles/onnx-baked-int8act --report $R/parity-onnx-baked-int8act --overwrite
fi
# a second single ablation, run in the minutes left: CA-LoRA without inheritance (LoRA starts fresh,
# recovery and distillation kept), seed 0, same teacher
if has single2; then
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --teacher $T --out $W/single2-4.7x \
    --seeds 0 --results $R/single2 --variants 'CA-LoRA without inherit'
fi
# the third single ablation (2026-12-07): CA-LoRA without distillation (inherited LoRA and recovery
# trained on the task loss alone), seed 0, same teacher
if has single3; then
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --teacher $T --out $W/single3-4.7x \
    --seeds 0 --results $R/single3 --variants 'CA-LoRA without distill'
fi
# seeds 1 and 2 at the 6x level (2026-12-07), as at the default level: LoRA from scratch and CA-LoRA
if has seeds6x; then
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --compression $L6 --teacher $T \
    --out $W/seeds-6x --seeds 1 2 --results $R/seeds-6x --variants 'compressed + LoRA from scratch' \
    'compressed + CA-LoRA'
fi
# the 6.4x CA-LoRA (seed 0) as deployed (2026-12-07): both baked bundles, validated on the whole
# test split in their runtimes
if has export6x; then
  for t in onnx executorch; do
    [ -f $W/bundles-6x/$t-baked/manifest.json ] || \
      step calora-export --target $t --mode baked --task rotten_tomatoes --runs $W/runs-6x --out $W/bundles-6x/$t-baked
  done
  step calora-validate $W/bundles-6x/onnx-baked $W/bundles-6x/executorch-baked --report $R/parity-6x-baked --overwrite
fi
# batch-1 latency, size and accuracy of the 5.7x and 6.4x baked bundles side by side, against PyTorch
# eager fp32 and the do-it-yourself route (2026-12-07, after the test suite)
if has latency6x; then
  step python -m benchmarks.classify_latency --runs $W/runs-4.7x --task rotten_tomatoes \
    --bundles $W/bundles/onnx-baked $W/bundles/executorch-baked $W/bundles-6x/onnx-baked $W/bundles-6x/executorch-baked \
    --work $W/latency-work --out $R/classify_latency_smollm2_rotten_tomatoes_6x.json
fi
# the int8 route trained for ONNX Runtime's numerics (2026-12-07), as on MiniLM: int8 weights, one
# activation scale per example (act:tensor, what DynamicQuantizeMatMul does), 50% unstructured magnitude pruning,
# int4 embeddings; same teacher, seed 0; exported to ONNX baked and swappable and validated
L8=int8+act:tensor+sparse:0.5+emb:int4
if has int8route; then
  [ -f $W/runs-int8/rotten_tomatoes/calora/metrics.json ] || \
    step calora-train --backbone $B --task rotten_tomatoes --compression $L8 --teacher $T --out $W/runs-int8
  for m in baked swappable; do
    [ -f $W/bundles-int8/onnx-$m/manifest.json ] || \
      step calora-export --target onnx --mode $m --task rotten_tomatoes --runs $W/runs-int8 --out $W/bundles-int8/onnx-$m
  done
  step calora-validate $W/bundles-int8/onnx-baked $W/bundles-int8/onnx-swappable --report $R/parity-int8-route --overwrite
fi
# batch-1 latency of the int8 route against the int4 5.7x bundles and the do-it-yourself route, one run
if has latencyint8; then
  step python -m benchmarks.classify_latency --runs $W/runs-4.7x --task rotten_tomatoes \
    --bundles $W/bundles/onnx-baked $W/bundles/executorch-baked $W/bundles-int8/onnx-baked \
    $W/bundles-int8/onnx-swappable --work $W/latency-work \
    --out $R/classify_latency_smollm2_rotten_tomatoes_int8.json
fi
# seeds 1 and 2 of two single ablations (2026-12-07): without inheritance (seed 0 above full CA-LoRA)
# and without distillation (seed 0 the largest loss). The first ran as written (03:41-04:46 UTC,
# beside int8_route_noise_probe.py, so slower). The chain was stopped before the second, which did
# not fit the session as one command; it ran as two, `--seeds 1` (04:47 UTC, on its own) and
# `--seeds 2` right after it, each with its own results folder.
if has singleseeds; then
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --teacher $T --out $W/single2-seeds \
    --seeds 1 2 --results $R/single2-seeds --variants 'CA-LoRA without inherit'
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --teacher $T --out $W/single3-seeds \
    --seeds 1 --results $R/single3-seeds --variants 'CA-LoRA without distill'
  step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --teacher $T --out $W/single3-seed2 \
    --seeds 2 --results $R/single3-seed2 --variants 'CA-LoRA without distill'
fi
# seeds 1 and 2 of the first single ablation (2026-12-07, from 05:50 UTC, the next session): CA-LoRA
# without recovery (inherited LoRA and distillation kept, no recovery branches), one command per seed
# so that each lands in its own results folder
if has recoveryseeds; then
  for s in 1 2; do
    step python -m calora.train.ablation --backbone $B --task rotten_tomatoes --teacher $T --out $W/single-seed$s \
      --seeds $s --results $R/single-seed$s --variants 'CA-LoRA without recover'
  done
fi
# the int8 route's bundles validated again (2026-12-07) by calora-validate with its new noise-floor
# diagnosis: where a value check fails, the reference recomputed in float64 on the first 256 texts
# beside the artifact's error on them (the same gates; the failures stay failures)
if has noisefloor; then
  step calora-validate $W/bundles-int8/onnx-baked $W/bundles-int8/onnx-swappable --report $R/parity-int8-route-noise-floor \
    --overwrite
fi
