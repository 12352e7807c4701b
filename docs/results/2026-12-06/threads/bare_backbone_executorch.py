"""Throwaway: the dense task's ExecuTorch baked bundle with every LoRA and recovery branch removed
(the compressed backbone alone), to measure what the adapter branches cost per decode step.

    python bare_backbone_executorch.py bench_runs/bundles-gen/executorch-bare-dense
"""
import sys
from calora.export.bundle import export_bundle
from calora.export.job import load_job
from calora.train.adapters import adapted_layers
job = load_job("bench_runs/runs-gen-dense", ["movie_dialog"], "baked")
for layer in adapted_layers(job.tasks[0].model).values():
    layer.lora_A = layer.lora_B = layer.recovery = None
export_bundle(job, "executorch", sys.argv[1], ["--target", "executorch"])
