"""LoRA and the CA-LoRA recovery branch, wrapped around a (compressed) linear layer.

``AdaptedLinear(x) = base(x) + scaling * B(A(dropout(x))) + U(act(D(x)))``

The LoRA half uses peft's parameter names (``lora_A.weight``, ``lora_B.weight``) so a saved
LoRA is a plain peft directory. The recovery half is calora's: a non-linear low-rank branch whose
up-projection U starts at zero, so attaching it changes nothing until training moves it.
"""

from __future__ import annotations

import enum
import math

import torch
from torch import nn

from .errors import AdapterMismatchError


class Activation(str, enum.Enum):
    GELU = "gelu"
    RELU = "relu"
    SILU = "silu"
    TANH = "tanh"

    def module(self) -> nn.Module:
        return {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}[self.value]()


class Recovery(nn.Module):
    """R(x) = act(x D^T) U^T with D: (rank, in), U: (out, rank), U zero-initialised."""

    def __init__(self, in_features: int, out_features: int, rank: int, activation: Activation) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.act = Activation(activation).module()
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class AdaptedLinear(nn.Module):
    """A frozen base linear layer plus an optional LoRA and an optional recovery branch."""

    def __init__(self, base: nn.Module, in_features: int, out_features: int) -> None:
        super().__init__()
        self.base_layer = base
        self.in_features = in_features
        self.out_features = out_features
        self.lora_A: nn.Linear | None = None
        self.lora_B: nn.Linear | None = None
        self.lora_dropout: nn.Module = nn.Identity()
        self.scaling = 1.0
        self.recovery: Recovery | None = None

    def add_lora(self, rank: int, alpha: float, dropout: float = 0.0, rslora: bool = False) -> None:
        self.lora_A = nn.Linear(self.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, self.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # peft's default init
        nn.init.zeros_(self.lora_B.weight)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = alpha / math.sqrt(rank) if rslora else alpha / rank

    def add_recovery(self, rank: int, activation: Activation) -> None:
        self.recovery = Recovery(self.in_features, self.out_features, rank, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.lora_A is not None:
            y = y + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        if self.recovery is not None:
            y = y + self.recovery(x)
        return y


def _features(module: nn.Module, name: str) -> tuple[int, int]:
    try:
        return int(module.in_features), int(module.out_features)
    except AttributeError:
        raise AdapterMismatchError(f"{name} ({type(module).__name__}) is not a linear layer") from None


def wrap(model: nn.Module, name: str) -> AdaptedLinear:
    """Replace the linear layer at `name` by an AdaptedLinear (idempotent) and return it."""
    module = model.get_submodule(name)
    if isinstance(module, AdaptedLinear):
        return module
    in_f, out_f = _features(module, name)
    adapted = AdaptedLinear(module, in_f, out_f)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, adapted)
    return adapted


def adapted_layers(model: nn.Module) -> dict[str, AdaptedLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AdaptedLinear)}


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA weights keyed by the wrapped layer's path: ``<path>.lora_A.weight`` etc."""
    out = {}
    for name, layer in adapted_layers(model).items():
        if layer.lora_A is not None:
            out[f"{name}.lora_A.weight"] = layer.lora_A.weight
            out[f"{name}.lora_B.weight"] = layer.lora_B.weight
    return out


def recovery_state(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, layer in adapted_layers(model).items():
        if layer.recovery is not None:
            out[f"{name}.recovery.down.weight"] = layer.recovery.down.weight
            out[f"{name}.recovery.up.weight"] = layer.recovery.up.weight
    return out
