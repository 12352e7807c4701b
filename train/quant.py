"""Quantized and pruned layers the student trains against.

The formats are the ones the mobile targets run, so training sees the deployed numerics:
symmetric integer weights (``scale = amax / ((qmax - qmin) / 2)``, torchao's SYMMETRIC mapping,
zero point 0, so pruned zeros stay exactly zero) and, optionally, int8 asymmetric dynamic
activations, per token (what XNNPACK's 8da kernels do at run time) or per tensor (ONNX Runtime's
DynamicQuantizeLinear in front of its integer MatMuls; one tensor is one example at batch 1). Integer codes and scales are
kept as buffers so export can hand the very same values to a target instead of re-quantizing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_RANGES = {8: (-128, 127), 4: (-8, 7)}


def quantize_weight(weight: torch.Tensor, bits: int, group_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization of a (out, in) weight. Returns int8 codes (out, in) and float32
    scales (out, in // group_size), one scale per output row when group_size is None."""
    qmin, qmax = _RANGES[bits]
    out_f, in_f = weight.shape
    group = in_f if group_size is None else group_size
    if in_f % group:
        raise ValueError(f"in_features={in_f} is not divisible by group_size={group}")
    w = weight.detach().float().reshape(out_f, in_f // group, group)
    amax = w.abs().amax(dim=-1)
    scale = (amax / ((qmax - qmin) / 2)).clamp(min=torch.finfo(torch.float32).eps)
    codes = torch.clamp(torch.round(w / scale.unsqueeze(-1)), qmin, qmax).to(torch.int8)
    return codes.reshape(out_f, in_f), scale


def dequantize_weight(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    out_f, in_f = codes.shape
    groups = scale.shape[1]
    w = codes.float().reshape(out_f, groups, in_f // groups) * scale.unsqueeze(-1)
    return w.reshape(out_f, in_f)


class _FakeQuantActivation(torch.autograd.Function):
    """The forward of `fake_quant_activation` in one buffer (in place after the first division),
    with the straight-through gradient as an identity backward. A training step runs this on the
    input of every compressed linear; the out-of-place form (about ten full-size temporaries and
    an autograd node for ``x + (deq - x).detach()``) made a LoRA step on the compressed MiniLM
    1.10-1.13x slower on CPU, for the same values (RESULTS.md section 7)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, per_tensor: bool) -> torch.Tensor:
        xf = x.float()
        # amin and amax, not aminmax: on CPU aminmax over the last dimension is 5x slower than both
        flat = xf.flatten(1) if per_tensor and xf.dim() > 1 else xf
        lo, hi = flat.amin(dim=-1, keepdim=True), flat.amax(dim=-1, keepdim=True)
        if flat is not xf:
            shape = (xf.shape[0],) + (1,) * (xf.dim() - 1)
            lo, hi = lo.view(shape), hi.view(shape)
        lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
        scale = ((hi - lo) / 255.0).clamp_(min=torch.finfo(torch.float32).eps)
        zero = torch.round(-128.0 - lo / scale).clamp_(-128, 127)
        q = torch.div(xf, scale).round_().add_(zero).clamp_(-128, 127)
        return q.sub_(zero).mul_(scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def fake_quant_activation(x: torch.Tensor, per_tensor: bool = False) -> torch.Tensor:
    """int8 asymmetric quantize-dequantize with a straight-through gradient: one scale and zero
    point per token (last dimension), or with `per_tensor` per example (every dimension but the
    first, so that a batch trains as its examples run one at a time on the device). The grid is
    ONNX Runtime's DynamicQuantizeLinear shifted by 128: range widened to include 0, scale
    (max - min) / 255, zero point and codes rounded half to even."""
    return _FakeQuantActivation.apply(x, per_tensor)


class QuantLinear(nn.Linear):
    """A frozen linear layer whose weight is ``codes * scale`` (integer codes kept for export).

    It subclasses nn.Linear so that peft recognises it: a calora LoRA directory loads with peft
    alone onto the compressed backbone too (peft then calls this forward as its base layer)."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                 bits: int, group_size: int | None, act_quant: bool, act_per_tensor: bool = False) -> None:
        nn.Module.__init__(self)  # skip nn.Linear's random init: the weight is given
        self.in_features = codes.shape[1]
        self.out_features = codes.shape[0]
        self.bits = bits
        self.group_size = group_size
        self.act_quant = act_quant
        self.act_per_tensor = act_per_tensor
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        # The dequantized weight is materialised once: it is what every forward multiplies by.
        self.weight = nn.Parameter(dequantize_weight(codes, scale), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int | None, act_quant: bool,
                    act_per_tensor: bool = False) -> "QuantLinear":
        codes, scale = quantize_weight(linear.weight, bits, group_size)
        return cls(codes, scale, linear.bias, bits, group_size, act_quant, act_per_tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_quant:
            x = fake_quant_activation(x, self.act_per_tensor)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, int{self.bits}, "
                f"group={self.group_size or 'row'}, act_int8={self.act_quant}"
                + (" per tensor" if self.act_quant and self.act_per_tensor else ""))


class QuantEmbedding(nn.Module):
    """An embedding table stored as integer codes (weight-only): int8 with one scale per row, or
    int4 with one scale per `group_size` hidden values."""

    def __init__(self, embedding: nn.Embedding, bits: int = 8, group_size: int | None = None) -> None:
        super().__init__()
        codes, scale = quantize_weight(embedding.weight, bits, group_size)
        self.bits, self.group_size = bits, group_size
        self.padding_idx = embedding.padding_idx
        self.num_embeddings, self.embedding_dim = embedding.weight.shape
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.register_buffer("weight", dequantize_weight(codes, scale), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, int{self.bits} "
                + (f"group {self.group_size}" if self.group_size else "per-row"))


class TiedLMHead(nn.Module):
    """The LM head of a model that ties it to its input embeddings, reading the (compressed)
    embedding table. The tie survives compression, so the head stays part of the shared backbone
    and never becomes a per-task tensor (SmolLM2's table is 28M parameters)."""

    def __init__(self, embedding: QuantEmbedding) -> None:
        super().__init__()
        object.__setattr__(self, "embedding", embedding)  # not a submodule: the backbone owns it

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.embedding.weight)

    def extra_repr(self) -> str:
        return f"tied to the int{self.embedding.bits} input embeddings"
