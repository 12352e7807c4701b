"""Prototype, not product code (2026-12-06): the dense task's ExecuTorch baked program with its LoRA
and recovery linears quantized like the backbone's, int8 weights per output channel with int8
dynamic activations (XNNPACK's QC8W kernels), to measure whether the float32 adapter products'
weight traffic is what the branches cost (11.6 MB of float32 adapter weights read per token).

    python int8_adapter_executorch.py RUNS TASK OUT.pte [REFERENCE.pte]
"""
import sys
from pathlib import Path

import torch
from torch import nn

from calora.export.decoder import StaticCache, decoder_shape
from calora.export.job import load_job
from calora.targets import get_target
from calora.targets.executorch_llm import _untie_head, lower, metadata

if __name__ == "__main__":
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    runs, task, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    job = load_job(runs, [task], "baked")
    trained = job.tasks[0].model
    shape = decoder_shape(trained, job.max_length)
    model, _, _ = get_target("executorch")._prepare(trained, job.spec)
    _untie_head(model, trained, job.spec)
    adapter = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)
               and (".lora_A" in n or ".lora_B" in n or ".recovery." in n)}
    quantize_(model, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)),
              filter_fn=lambda mod, fqn: fqn in adapter)
    print("adapter linears quantized:", len(adapter))
    prompt = list(job.smoke_prompts[0])
    data, stats, _ = lower(StaticCache(model, shape), (torch.tensor([prompt[:4]]), torch.tensor([0])), shape,
                           metadata(shape, job.generation))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print("wrote", out, len(data), "bytes;", {k: v for k, v in stats.items() if k != "ops"})
    if len(sys.argv) > 4:
        from calora.targets.executorch_llm_runtime import PteSession

        a, b = PteSession(Path(sys.argv[4])), PteSession(out)
        la, lb = a.forward_logits(prompt, []), b.forward_logits(prompt, [])
        print("program max |logit difference| against the bundle's:", float(abs(la - lb).max()),
              "argmax agreement:", float((la.argmax(-1) == lb.argmax(-1)).mean()))
