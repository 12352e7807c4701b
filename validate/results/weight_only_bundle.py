"""Reproduce the silent failure calora-validate must catch, on real weights: export a trained task
to ExecuTorch with torchao's *weight-only* int4 config (IntxWeightOnlyConfig) in place of the
8da4w config calora uses. FACTS.md: XNNPACK then runs the raw integers as float weights, with no
error at export or at run time.

    python validate/results/weight_only_bundle.py --runs calora_runs --task rotten_tomatoes --out bundles/wo
    calora-validate bundles/wo --runs calora_runs --report validate/results/weight_only_executorch   # exits 1

Not part of the product: it deliberately builds a wrong artifact.
"""

from __future__ import annotations

import argparse

import torchao.quantization as tq

from calora.export.bundle import export_bundle
from calora.export.job import load_job


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="calora_runs")
    p.add_argument("--task", default="rotten_tomatoes")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    def weight_only(weight_dtype, weight_granularity, **_):
        return tq.IntxWeightOnlyConfig(weight_dtype=weight_dtype, granularity=weight_granularity)

    tq.Int8DynamicActivationIntxWeightConfig = weight_only  # the ExecuTorch target imports it at export time
    export_bundle(load_job(args.runs, [args.task], "baked"), "executorch", args.out,
                  ["--target", "executorch", "--task", args.task, "(weight-only, deliberately wrong)"])


if __name__ == "__main__":
    main()
