"""The growing-cache decoder written with ONNX Runtime's fused contrib ops, as onnxruntime-genai's
own model builder writes Llama graphs: one ``GroupQueryAttention`` per layer (rotary embedding,
cache append, grouped-query softmax attention) and ``SkipSimplifiedLayerNormalization`` for every
residual add + RMSNorm pair.

Why: a decode step of SmolLM2-135M exported op by op ran 2,769 nodes (rotary, repeat, transpose,
concat and softmax per layer; Pow/ReduceMean/Sqrt/Reciprocal/Mul per norm); written this way it
runs 1,394, and decodes 1.04-1.07x faster on 2 x86 cores (`benchmarks.ort_profile --decode`,
`benchmarks.gen_decode`, 2026-12-06; docs/RESULTS.md section 5). The projections, MLP and LoRA/recovery branches are still
the model's own modules, so the adapters run exactly as trained and stay swappable.

The contrib ops are placed with `torch.onnx.ops.symbolic`, which only means something in the
exported graph: this module is for `torch.onnx.export` only (in eager PyTorch its symbolic ops
return placeholders). Its PyTorch counterpart is `calora.export.decoder.GrowingCache`, which the
tests and validation compare it with through ONNX Runtime.

Contract: the same inputs and outputs as `GrowingCache` (``input_ids, attention_mask,
position_ids, past...`` -> ``logits, present...``), batch 1 as the bundles declare. Positions come
from the attention mask as GroupQueryAttention computes them (``seqlens_k = sum(mask) - 1``), which
equals `position_ids` for an unpadded sequence; `position_ids` stays an input so the graph keeps
onnxruntime-genai's Llama contract.
"""

from __future__ import annotations

import torch
from torch import nn

from calora.export.decoder import DecoderBody, DecoderShape

#: com.microsoft contrib ops the fused graph uses (ONNX Runtime CPU EP, also in ORT Mobile builds).
GQA = "com.microsoft::GroupQueryAttention"
SKIP_NORM = "com.microsoft::SkipSimplifiedLayerNormalization"
NORM = "SimplifiedLayerNormalization"  # ONNX Runtime registers it in the default domain, opset 1


def _epsilon(norm: nn.Module) -> float:
    eps = getattr(norm, "variance_epsilon", None)
    if eps is None:
        eps = getattr(norm, "eps", None)
    if eps is None:
        raise TypeError(f"{type(norm).__name__} has no epsilon: not an RMSNorm")
    return float(eps)


class FusedGrowingCache(nn.Module):
    """onnxruntime-genai's decoder contract with fused attention and norms (see the module docstring).
    `body.model` is the model, so `decoder.Swappable` can feed adapter tensors to it as to GrowingCache."""

    def __init__(self, model: nn.Module, shape: DecoderShape) -> None:
        super().__init__()
        self.body = DecoderBody(model, shape)
        base = model.model
        ref = next(model.parameters())
        positions = torch.arange(shape.max_context, device=ref.device).unsqueeze(0)
        with torch.no_grad():
            cos, sin = base.rotary_emb(ref.new_zeros(1, 1, shape.head_dim), positions)
        # The model's rotary tables hold each frequency twice ([f, f]); GroupQueryAttention takes
        # one copy, [max_context, head_dim / 2], and rotates the halves (rotary_interleaved 0) as Llama.
        half = shape.head_dim // 2
        self.register_buffer("cos_cache", cos[0, :, :half].float().contiguous(), persistent=False)
        self.register_buffer("sin_cache", sin[0, :, :half].float().contiguous(), persistent=False)

    def _norm(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        return torch.onnx.ops.symbolic(NORM, [x, norm.weight], {"axis": -1, "epsilon": _epsilon(norm)},
                                       dtype=x.dtype, shape=x.shape, version=1)

    def _skip_norm(self, x: torch.Tensor, residual: torch.Tensor, norm: nn.Module):
        """(norm(x + residual), x + residual) as one kernel."""
        b, s, _ = x.shape
        out, _mean, _inv, total = torch.onnx.ops.symbolic_multi_out(
            SKIP_NORM, [x, residual, norm.weight], {"epsilon": _epsilon(norm)},
            dtypes=[x.dtype] * 4, shapes=[x.shape, (b, s, 1), (b, s, 1), x.shape], version=1)
        return out, total

    def _attention(self, attn: nn.Module, h: torch.Tensor, past_k, past_v, seqlens, total):
        shape = self.body.shape
        b, s, _ = h.shape
        q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
        t = past_k.shape[2] + s
        present = (b, shape.kv_heads, t, shape.head_dim)
        out, k_all, v_all = torch.onnx.ops.symbolic_multi_out(
            GQA, [q, k, v, past_k, past_v, seqlens, total, self.cos_cache, self.sin_cache],
            {"num_heads": shape.heads, "kv_num_heads": shape.kv_heads, "scale": float(self.body.scale),
             "do_rotary": 1, "rotary_interleaved": 0},
            dtypes=[h.dtype] * 3, shapes=[(b, s, shape.heads * shape.head_dim), present, present], version=1)
        return attn.o_proj(out), k_all, v_all

    def forward(self, input_ids, attention_mask, position_ids, *past):
        base = self.body.model.model
        # GroupQueryAttention's positions and key lengths: seqlens_k = keys per row - 1, and the
        # longest total length (int32, as the op takes them).
        seqlens = (attention_mask.sum(-1) - 1).to(torch.int32)
        total = (attention_mask.new_ones(()) * attention_mask.shape[1]).to(torch.int32)
        x = base.embed_tokens(input_ids)
        presents: list[torch.Tensor] = []
        pending = None  # the previous block's output, added to x by the next fused norm
        for i, layer in enumerate(base.layers):
            if pending is None:
                h = self._norm(x, layer.input_layernorm)
            else:
                h, x = self._skip_norm(pending, x, layer.input_layernorm)
            out, k_all, v_all = self._attention(layer.self_attn, h, past[2 * i], past[2 * i + 1], seqlens, total)
            presents.extend((k_all, v_all))
            h, x = self._skip_norm(out, x, layer.post_attention_layernorm)
            pending = layer.mlp(h)
        final = self._norm(x, base.norm) if pending is None else self._skip_norm(pending, x, base.norm)[0]
        return (self.body.logits(final), *presents)
