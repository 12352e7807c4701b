"""How a swappable bundle stores one task's adapter tensors, and how an app widens them again.

One place for every target: the ONNX adapter inputs, the ExecuTorch `.safetensors` files and the
Core ML task functions all store what `encode` returns, and the runtimes (and calora-validate's
reference) compute with what `decode` returns.

- float32 / float16: every tensor cast to that dtype.
- int8: each LoRA and recovery matrix as symmetric int8 codes with one float32 scale per rank
  component, stored next to it as `<name>.scale` (shape: the rank dimension kept, the other 1,
  so `codes * scale` broadcasts); head tensors (no rank dimension, a few KB) stay float16. A scale
  per rank component keeps each component's own range (one LoRA/recovery direction can be 10x
  another's) and costs `rank` floats per matrix, nothing next to the int8 codes; it also keeps the
  ONNX defaults empty along the rank, like the matrices', so the shared backbone holds no
  adapter-sized bytes.
"""

from __future__ import annotations

import torch

from .base import AdapterDType

SCALE_SUFFIX = ".scale"
#: which dimension of each adapter matrix (torch layout: nn.Linear weight [out, in]) is the rank
RANK_DIM = {".lora_A.weight": 0, ".recovery.down.weight": 0, ".lora_B.weight": 1, ".recovery.up.weight": 1}
_INT8_MAX = 127


def rank_dim(name: str) -> int | None:
    """The rank dimension of adapter tensor `name`, None for tensors without one (the head)."""
    return next((d for suffix, d in RANK_DIM.items() if name.endswith(suffix)), None)


def quantized(name: str, dtype: AdapterDType) -> bool:
    """Whether `encode` stores `name` as int8 codes plus a `<name>.scale` tensor."""
    return dtype == AdapterDType.INT8 and rank_dim(name) is not None


def stored_dtype(name: str, dtype: AdapterDType) -> torch.dtype:
    """The dtype `encode` stores tensor `name` in (a `.scale` name: float32)."""
    if name.endswith(SCALE_SUFFIX):
        return torch.float32
    if dtype == AdapterDType.INT8:
        return torch.int8 if rank_dim(name) is not None else torch.float16
    return getattr(torch, dtype.value)


def int8_codes(t: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes of matrix `t` and one float32 scale per index of dimension `dim`, shaped
    to broadcast against it (max |t| over the other dimension / 127; an all-zero slice gets scale
    1, codes 0)."""
    t = t.detach().float()
    scale = t.abs().amax(dim=1 - dim, keepdim=True) / _INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(t / scale).clamp(-_INT8_MAX, _INT8_MAX).to(torch.int8)
    return codes.contiguous(), scale.contiguous()


def encode(tensors: dict[str, torch.Tensor], dtype: AdapterDType) -> dict[str, torch.Tensor]:
    """The tensors as an adapter file of `dtype` stores them (int8: codes and `.scale` entries)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if quantized(name, dtype):
            out[name], out[name + SCALE_SUFFIX] = int8_codes(t, rank_dim(name))
        else:
            out[name] = t.detach().to(stored_dtype(name, dtype)).clone().contiguous()
    return out


def stored_names(names: list[str], dtype: AdapterDType) -> list[str]:
    """Every tensor name of an adapter file of `dtype`, each scale right after its matrix."""
    return [m for n in names for m in ((n, n + SCALE_SUFFIX) if quantized(n, dtype) else (n,))]


def decode(stored: dict[str, torch.Tensor], names: list[str]) -> list[torch.Tensor]:
    """The float32 tensors a program computes with, in `names` order: what an app does once when
    it loads a task (int8 codes times their scale; float16 widened)."""
    out = []
    for n in names:
        scale = stored.get(n + SCALE_SUFFIX)
        t = stored[n].float()
        out.append((t * scale).contiguous() if scale is not None else t.contiguous())
    return out


def rounded(tensors: dict[str, torch.Tensor], dtype: AdapterDType) -> dict[str, torch.Tensor]:
    """float32 tensors on the grid of `dtype`: what the deployed artifact computes with."""
    names = list(tensors)
    return dict(zip(names, decode(encode(tensors, dtype), names)))
