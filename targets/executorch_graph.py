"""Encoder classifiers rewritten so that XNNPACK runs the whole encoder in one delegate call.

Why: exported as transformers writes it, a MiniLM-L6 classifier lowered to ExecuTorch ran half of
each example's time in portable kernels between 26 XNNPACK partitions (`benchmarks.et_profile`,
int8 `ffn:0.5` bundle, 2026-12-07): PyTorch's SDPA decomposes into a boolean mask turned into
-inf (`where`, `logical_not`) and the "safe softmax" guard against fully masked rows (`eq`, `any`,
`full_like`, `where`), rebuilt in every layer, plus `expand_copy` of Q, K and V and a scalar
`mul`; and LayerNorm has no XNNPACK kernel, so every norm cut the graph. Together 5.8 of 11.6 ms.

How, on a deployable copy only (the trained model is untouched):

- attention: one more entry in transformers' attention registry (`attention_switch`) computes
  softmax(Q K^T * scale + mask) V as two `bmm`s, a multiply, an add and a softmax, all XNNPACK
  operators. The mask is transformers' additive eager mask (0 or the float32 minimum), built once
  per forward outside the layers, so a padded key gets a weight of 0 as with SDPA, and no row can
  be all -inf.
- norms: `nn.LayerNorm` and Llama's RMSNorm become the same arithmetic written with XNNPACK
  operators: the mean over the hidden size is a product with a constant column of 1/n (XNNPACK's
  own mean only averages the two inner dimensions of a 4-D tensor).

What is computed does not change, only how: the rewritten copy's logits equal the original's to
float32 rounding (a test checks it), grouped-query attention included.
"""

from __future__ import annotations

import torch
from torch import nn

from calora.targets.attention_switch import switch_attention

#: the attention implementation name registered with transformers
NAME = "calora_xnnpack_bmm"


def _attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
               **kwargs):
    """softmax(Q K^T * scale + mask) V on [batch, heads, sequence, head_dim] tensors, written with
    3-D `bmm`s (a 4-D matmul would be exported with `expand` copies XNNPACK does not take).
    Grouped-query attention needs no repeated keys: the g query heads that share a key head are
    contiguous, so they are viewed as one [g * sequence, head_dim] block against that head."""
    b, h, s, d = query.shape
    kv, t = key.shape[1], key.shape[2]
    if dropout:  # training only; export copies run in eval mode
        raise ValueError("calora_xnnpack_bmm attention is for inference: dropout must be 0")
    if h % kv:
        raise ValueError(f"calora_xnnpack_bmm attention: {h} query heads do not group over {kv} key heads")
    g = h // kv
    scale = float(scaling) if scaling is not None else d ** -0.5
    q = query.reshape(b * kv, g * s, d)
    scores = torch.bmm(q, key.reshape(b * kv, t, d).transpose(1, 2)).view(b, h, s, t)
    scores = scores * scale
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1).view(b * kv, g * s, t)
    out = torch.bmm(weights, value.reshape(b * kv, t, d)).view(b, h, s, d)
    return out.transpose(1, 2), None


class _Norm(nn.Module):
    """LayerNorm (centred, with optional bias) or RMSNorm over the last dimension, the mean taken
    as a product with a constant column of 1/n, so XNNPACK runs it as a fully connected layer."""

    def __init__(self, n: int, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, centred: bool):
        super().__init__()
        self.weight, self.bias, self.eps, self.centred = weight, bias, float(eps), centred
        self.register_buffer("mean_col", torch.full((n, 1), 1.0 / n), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.centred:
            x = x - x @ self.mean_col
        y = x * torch.rsqrt((x * x) @ self.mean_col + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


def _as_norm(module: nn.Module) -> _Norm | None:
    """The XNNPACK form of `module` where it is a norm this file knows, else None."""
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            return None
        return _Norm(module.normalized_shape[0], module.weight, module.bias, module.eps, centred=True)
    try:
        from transformers.models.llama.modeling_llama import LlamaRMSNorm
    except ImportError:
        return None
    if type(module) is LlamaRMSNorm:  # exactly Llama's formula: subclasses may change it
        return _Norm(module.weight.shape[-1], module.weight, None, module.variance_epsilon, centred=False)
    return None


def xnnpack_friendly(model: nn.Module) -> dict[str, str]:
    """Rewrite a deployable copy's attention and norms into XNNPACK operators (module docstring).
    Returns what changed, for the manifest: {"attention": "bmm" | "model", "norms": "N rewritten"}."""
    norms = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            rewritten = _as_norm(child)
            if rewritten is not None:
                setattr(parent, name, rewritten)
                norms += 1
    attention = "bmm" if switch_attention(model, NAME, _attention, grouped=True) else "model"
    return {"attention": attention, "norms": f"{norms} rewritten"}
