"""Prototype, not product code (2026-12-06): the dense task's ExecuTorch baked program lowered with a
static one-token input (a decode-only program: no prefill), against the shipped program whose
token dimension is dynamic. Asks whether XNNPACK's per-call work on dynamic shapes (reshaping
every operator for the call's sequence length) is what the 1,080 small adapter operators cost.

    python static_decode_executorch.py RUNS TASK OUT.pte [--bare]

`--bare`: every LoRA and recovery branch removed first (the compressed backbone alone).
"""
import sys
from pathlib import Path

import torch

from calora.export.decoder import StaticCache, decoder_shape
from calora.export.job import load_job
from calora.targets import get_target
from calora.targets.executorch_llm import _untie_head, metadata

if __name__ == "__main__":
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass
    from executorch.exir.passes.quant_fusion_pass import quant_fusion_and_const_prop_pass

    from calora.train.adapters import adapted_layers

    runs, task, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    job = load_job(runs, [task], "baked")
    trained = job.tasks[0].model
    if "--bare" in sys.argv:
        for layer in adapted_layers(trained).values():
            layer.lora_A = layer.lora_B = layer.recovery = None
    shape = decoder_shape(trained, job.max_length)
    model, _, _ = get_target("executorch")._prepare(trained, job.spec)
    _untie_head(model, trained, job.spec)
    example = (torch.tensor([[5]]), torch.tensor([0]))
    with torch.no_grad():
        ep = torch.export.export(StaticCache(model, shape).eval(), example, strict=False)  # every shape static
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                       constant_methods=metadata(shape, job.generation))
    quant_fusion_and_const_prop_pass(edge.exported_program())
    et = edge.to_executorch(ExecutorchBackendConfig(passes=[InitializedMutableBufferPass(["k_cache", "v_cache"])]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(et.buffer))
    print("wrote", out)
