"""LoftQ-style initialisation of a fresh LoRA on a compressed backbone (a baseline, not CA-LoRA).

LoftQ (Li et al., 2023) starts LoRA at the best rank-r approximation of what compression removed:
``scaling * B @ A = SVD_r(W - C(W))``, so the compressed layer plus its LoRA begins close to the
uncompressed layer. LoftQ alternates that step with re-quantizing ``W - B A``; calora's backbone is
compressed once, task-agnostically, and shared by every task, so only the LoRA step applies: the
one-iteration form, which is also what peft's ``replace_lora_weights_loftq`` does for a model that
is already quantized. The singular values are split evenly between A and B (as peft does), and
both are divided by sqrt(scaling) so that the LoRA's output, which is scaled, matches the residual.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .adapters import adapted_layers
from .errors import ConfigError


def _weight(module: nn.Module, name: str) -> torch.Tensor:
    if type(module).__module__.startswith("bitsandbytes"):
        raise ConfigError(f"--loftq: layer {name} is a bitsandbytes layer; the LoftQ baseline here needs the "
                          "compressed weight in float (use an int4/int8 --compression, or peft's "
                          "replace_lora_weights_loftq for bitsandbytes models)")
    return module.weight.detach().float()


@torch.no_grad()
def loftq_init(student: nn.Module, teacher: nn.Module) -> dict:
    """Set every LoRA (A, B) of `student` from the residual between the uncompressed layer of the same
    name in `teacher` (its base weight, without the teacher's LoRA) and the student's compressed
    layer. Returns the mean relative residual norm before and after, over the LoRA layers."""
    originals = adapted_layers(teacher)
    before, after = [], []
    for name, layer in adapted_layers(student).items():
        if not hasattr(layer, "lora_A"):
            continue
        if name not in originals:
            raise ConfigError(f"--loftq: the uncompressed model has no layer {name} to take the residual from")
        compressed = _weight(layer.base_layer, name)
        full = _weight(originals[name].base_layer, name).to(compressed.device)
        if full.shape != compressed.shape:
            raise ConfigError(f"--loftq: layer {name} is {tuple(compressed.shape)} after structured pruning and "
                              f"{tuple(full.shape)} before; a LoftQ init needs the same shape (drop heads/ffn pruning "
                              "from --compression, or put the LoRA on unpruned layers)")
        residual = full - compressed
        rank = layer.lora_A.weight.shape[0]
        u, s, vh = torch.linalg.svd(residual, full_matrices=False)
        root = torch.sqrt(s[:rank]) / math.sqrt(layer.scaling)
        layer.lora_B.weight.copy_((u[:, :rank] * root).to(layer.lora_B.weight.dtype))
        layer.lora_A.weight.copy_((root[:, None] * vh[:rank]).to(layer.lora_A.weight.dtype))
        approx = layer.scaling * layer.lora_B.weight.float() @ layer.lora_A.weight.float()
        full_norm = max(float(full.norm()), 1e-12)
        before.append(float(residual.norm()) / full_norm)
        after.append(float((residual - approx).norm()) / full_norm)
    if not before:
        raise ConfigError("--loftq: the student has no LoRA layer to initialise")
    return {"layers": len(before), "relative_residual_before": sum(before) / len(before),
            "relative_residual_after": sum(after) / len(after)}


__all__ = ["loftq_init"]
