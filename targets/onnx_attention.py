"""Self-attention of encoder classifiers written as ONNX Runtime's fused ``MultiHeadAttention``.

Why: exported op by op, each BERT layer's attention is about 25 nodes (reshapes and transposes of
Q, K and V, two batched matmuls, the mask's Where / IsNaN guard around Softmax, the merge of the
heads). On MiniLM-L6 at 64 tokens they took about a quarter of ONNX Runtime's kernel time per example
(`benchmarks.ort_profile`, 2026-12-07). ``com.microsoft::MultiHeadAttention`` does the same work
in one CPU kernel per layer. The Q, K, V and output projections, their LoRA and recovery branches
stay the model's own modules, so adapters run as trained and stay swappable.

How: `use_fused_attention` registers one more entry in transformers' attention registry and
switches a deployable copy to it (`attention_switch`). While `torch.onnx.export` traces, the
entry places the contrib op; in eager PyTorch it runs PyTorch's own SDPA on the same inputs, so
the copy still computes the reference's logits. The padding mask arrives additive (``eager_mask``: 0 or the float32 minimum, [batch, 1, query, key]),
which is MultiHeadAttention's ``attention_bias`` input.

Models whose key heads differ from query heads (grouped-query attention) and models that do not
take a registered attention implementation keep the op-by-op graph.
"""

from __future__ import annotations

import torch
from torch import nn

from calora.targets.attention_switch import switch_attention

#: the attention implementation name registered with transformers (and recorded in the manifest)
NAME = "calora_ort_mha"
MHA = "com.microsoft::MultiHeadAttention"


def _attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
               **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h, s, d = query.shape
    if not torch.compiler.is_exporting() or key.shape[1] != h or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    t = key.shape[2]
    # back to [batch, sequence, heads * head_dim], the layout the op takes; the exporter folds these
    # reshapes and transposes into the projections' own
    q = query.transpose(1, 2).reshape(b, s, h * d)
    k = key.transpose(1, 2).reshape(b, t, h * d)
    v = value.transpose(1, 2).reshape(b, t, h * d)
    scale = float(scaling) if scaling is not None else d ** -0.5
    # inputs: query, key, value, bias (none: the projections added theirs), key_padding_mask (none),
    # attention_bias (the additive padding mask)
    out = torch.onnx.ops.symbolic(MHA, [q, k, v, None, None, attention_mask], {"num_heads": h, "scale": scale},
                                  dtype=q.dtype, shape=(b, s, h * d), version=1)
    return out.reshape(b, s, h, d), None


def use_fused_attention(model: nn.Module) -> bool:
    """Switch a deployable copy's attention to the fused-op entry. Returns False (and leaves the
    model as it was) where the model cannot take it: its export keeps the op-by-op attention."""
    return switch_attention(model, NAME, _attention)
