"""Switch a deployable copy of a transformers model to an attention function of calora's own.

transformers (>= 5) routes every attention through a registry keyed by
``config._attn_implementation``, and builds the padding mask through a second registry keyed the
same way. A target that wants attention written its own way (ONNX Runtime's fused contrib op,
XNNPACK's batched matmuls) registers one entry in each and switches the export copy to it; the
trained model is never touched. The mask entry is ``eager_mask``: additive, 0 or the float32
minimum, [batch, 1, query, key], computed once per forward, not once per layer.
"""

from __future__ import annotations

from typing import Callable

from torch import nn


def switch_attention(model: nn.Module, name: str, attention: Callable, grouped: bool = False) -> bool:
    """Make `model` (a deployable copy) run `attention` under the registry name `name`, with the
    additive eager mask. Returns False, leaving the model as it was, where it cannot: transformers
    without the registry, grouped-query attention (key heads differ from query heads) unless
    `attention` takes it (`grouped`), or a model that refuses the implementation. Its export then
    keeps the model's own attention."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask
    except ImportError:  # transformers < 5: no attention registry
        return False
    heads = getattr(model.config, "num_attention_heads", None)
    if getattr(model.config, "num_key_value_heads", heads) != heads and not grouped:
        return False
    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, eager_mask)
    before = getattr(model.config, "_attn_implementation", None)
    setter = getattr(model, "set_attn_implementation", None)
    if not callable(setter):
        return False
    try:
        setter(name)
    except (ValueError, NotImplementedError, TypeError):
        if before is not None:
            model.config._attn_implementation = before
        return False
    return getattr(model.config, "_attn_implementation", None) == name
