"""Export-ready causal LM graphs with a KV cache, shared by every target.

A trained generative task is a Llama-family causal LM whose linear layers carry calora's LoRA and
recovery branches. Runtimes' LLM tooling wants the decoder split into prefill and one-token decode
steps around a key/value cache, in one of these shapes:

- `CacheStyle.GROWING` (onnxruntime-genai): ``forward(input_ids [B,S], attention_mask [B,P+S],
  position_ids [B,S], past.0.key, past.0.value, ...) -> (logits [B,S,V], present.0.key, ...)``
  where each present is the past with this step's keys appended ([B, kv_heads, P+S, head_dim]).
- `CacheStyle.STATIC` (ExecuTorch's LLM runner): ``forward(tokens [1,S], input_pos [1]) ->
  logits [1,S,V]`` with the cache held in mutable buffers of a fixed maximum context, written in
  place at ``input_pos`` by ExecuTorch's LLM cache and attention kernels.
- `CacheStyle.STATE` (Core ML stateful models): ``forward(input_ids [1,S], causal_mask [1,1,S,T])
  -> logits [1,S,V]`` with float16 cache states written at [T-S, T) (`StateCache`).

The attention is written out here (not transformers' cache classes) so each runtime sees ops it
can lower: plain tensor ops for Core ML and the ONNX reference, ExecuTorch's own LLM kernels for
ExecuTorch; the projections, norms, rotary embedding and MLP are the model's own
modules, so LoRA and recovery run exactly as trained. `Swappable` variants take the task's adapter
tensors as extra inputs, so one backbone graph serves every task. The ONNX target exports the
growing contract with ONNX Runtime's fused attention and norm ops instead
(`calora.targets.onnx_fused`); `GrowingCache` is its PyTorch reference.
"""

from __future__ import annotations

import dataclasses
import enum

import torch
import torch.nn.functional as F
from torch import nn

from calora.train.errors import ConfigError
from calora.train.quant import TiedLMHead


class CacheStyle(str, enum.Enum):
    GROWING = "growing"  # present = concat(past, new): onnxruntime-genai's default on CPU
    STATIC = "static"  # fixed [max_context] buffers updated in place at input_pos: ExecuTorch
    STATE = "state"  # fp16 buffers as model state, positions from the mask's shape: Core ML


@dataclasses.dataclass(frozen=True)
class DecoderShape:
    """What a runtime's generation config needs to know about the graph."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    max_context: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def decoder_shape(model: nn.Module, max_context: int) -> DecoderShape:
    cfg = model.config
    if getattr(cfg, "model_type", "") not in ("llama", "mistral", "qwen2", "qwen3"):
        raise ConfigError(f"backbone type {getattr(cfg, 'model_type', '?')!r}: generative export supports "
                          "Llama-family decoders (llama, mistral, qwen2, qwen3) so far")
    positions = int(getattr(cfg, "max_position_embeddings", max_context))
    if not 2 <= max_context <= positions:
        raise ConfigError(f"--max-length {max_context}: the maximum context must be between 2 and the "
                          f"backbone's {positions} positions")
    heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return DecoderShape(int(cfg.num_hidden_layers), heads, int(getattr(cfg, "num_key_value_heads", heads)),
                        head_dim, int(cfg.hidden_size), int(cfg.vocab_size), int(max_context))


def _rotate(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class DecoderBody(nn.Module):
    """The shared body: embeddings -> layers (attention over a given key/value history) -> logits."""

    def __init__(self, model: nn.Module, shape: DecoderShape) -> None:
        super().__init__()
        self.model = model
        self.shape = shape
        self.scale = shape.head_dim ** -0.5
        head = model.lm_head
        # A tied head reads the embedding table itself, so the graph holds that table once.
        self.tied = isinstance(head, TiedLMHead) or getattr(head, "weight", None) is \
            model.get_input_embeddings().weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.tied:
            return F.linear(hidden, self.model.get_input_embeddings().weight)
        return self.model.lm_head(hidden)

    def project(self, attn: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                heads_first: bool = True):
        """Rotary-embedded q, k and v: [B, heads, S, D] (`heads_first`) or [B, S, heads, D]."""
        b, s, _ = x.shape
        d = self.shape.head_dim
        q = attn.q_proj(x).view(b, s, self.shape.heads, d)
        k = attn.k_proj(x).view(b, s, self.shape.kv_heads, d)
        v = attn.v_proj(x).view(b, s, self.shape.kv_heads, d)
        if heads_first:
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = cos.unsqueeze(1 if heads_first else 2), sin.unsqueeze(1 if heads_first else 2)
        return q * cos + _rotate(q) * sin, k * cos + _rotate(k) * sin, v

    def attend(self, attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               bias: torch.Tensor) -> torch.Tensor:
        """Softmax attention of q [B,H,S,D] over k, v [B,KV,T,D] with an additive bias [B,1,S,T].
        Query head h reads key/value head h // groups (grouped-query attention)."""
        # Head counts from the config, not q.shape: traced (Core ML) they must stay Python ints.
        h, d = self.shape.heads, self.shape.head_dim
        groups = h // self.shape.kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale + bias
        out = torch.matmul(torch.softmax(scores.float(), dim=-1).to(q.dtype), v)
        b, _, s, _ = out.shape
        return attn.o_proj(out.transpose(1, 2).reshape(b, s, h * d))

    def run(self, input_ids: torch.Tensor, position_ids: torch.Tensor, history=None, attention=None) -> torch.Tensor:
        """`history(layer_index, k, v) -> (k_all, v_all, bias)` supplies each layer's cache to the
        attention written out here; or `attention(layer_index, attn, x, cos, sin) -> [B, S, hidden]`
        replaces that attention whole (ExecuTorch's cache and attention kernels)."""
        base = self.model.model
        x = base.embed_tokens(input_ids)
        cos, sin = base.rotary_emb(x, position_ids)
        for i, layer in enumerate(base.layers):
            h = layer.input_layernorm(x)
            if attention is not None:
                x = x + attention(i, layer.self_attn, h, cos, sin)
            else:
                q, k, v = self.project(layer.self_attn, h, cos, sin)
                k_all, v_all, bias = history(i, k, v)
                x = x + self.attend(layer.self_attn, q, k_all, v_all, bias)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.logits(base.norm(x))


_NEG = -1e9  # finite: a fully masked row (left padding) stays NaN-free in every runtime


class GrowingCache(nn.Module):
    """onnxruntime-genai's decoder contract; see the module docstring. Run in PyTorch, it is the
    reference of the fused graph the ONNX target exports (`calora.targets.onnx_fused`)."""

    def __init__(self, model: nn.Module, shape: DecoderShape) -> None:
        super().__init__()
        self.body = DecoderBody(model, shape)

    def forward(self, input_ids, attention_mask, position_ids, *past):
        s = input_ids.shape[1]
        total = attention_mask.shape[1]
        # Query i sits at index total - s + i of the key sequence: it sees keys up to there.
        q_idx = torch.arange(s, device=input_ids.device).unsqueeze(1) + (total - s)
        k_idx = torch.arange(total, device=input_ids.device).unsqueeze(0)
        allowed = (k_idx <= q_idx).unsqueeze(0) & attention_mask.bool().unsqueeze(1)
        bias = torch.where(allowed, 0.0, _NEG).unsqueeze(1)
        presents: list[torch.Tensor] = []

        def history(i, k, v):
            k_all = torch.cat([past[2 * i], k], dim=2)
            v_all = torch.cat([past[2 * i + 1], v], dim=2)
            presents.extend((k_all, v_all))
            return k_all, v_all, bias

        logits = self.body.run(input_ids, position_ids, history)
        return (logits, *presents)


class StaticCache(nn.Module):
    """ExecuTorch's LLM runner contract (forward(tokens, input_pos) -> logits) with the cache in
    mutable buffers of `shape.max_context` positions, written in place at `input_pos`, as ExecuTorch's
    own Llama export writes it (`--use_sdpa_with_kv_cache`): one [1, max_context, kv_heads, head_dim]
    buffer per layer, `llama::update_cache` writing the step's rows, and `llama::custom_sdpa`
    attending causally over positions [0, input_pos + S) only, with grouped-query heads read in place.

    Why these kernels (ExecuTorch's LLM custom ops; `benchmarks.et_profile`, 2026-12-06): the same
    write as `cache.narrow(...).copy_(k)` exports as a portable slice_scatter of the whole buffer
    plus a copy back, two full-cache copies per buffer and step (10% of a SmolLM2 step at 128
    positions, growing with max_context); and attention written out in aten ops reads every one of
    the max_context positions, masked. The kernels ship with ExecuTorch's LLM runtimes (Android's
    executorch AAR, iOS `kernels_llm`); Python loads them from `executorch.extension.llm.custom_ops`.
    One buffer per layer: a layer's slice of one [layers, ...] buffer exports as a select_scatter
    of the whole buffer (77% of a SmolLM2 step, `benchmarks.et_profile`, 2026-12-05)."""

    def __init__(self, model: nn.Module, shape: DecoderShape) -> None:
        super().__init__()
        load_llm_kernels()
        self.body = DecoderBody(model, shape)
        cache = (1, shape.max_context, shape.kv_heads, shape.head_dim)
        for i in range(shape.layers):
            self.register_buffer(f"k_cache_{i}", torch.zeros(cache), persistent=False)
            self.register_buffer(f"v_cache_{i}", torch.zeros(cache), persistent=False)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        s = tokens.shape[1]
        shape = self.body.shape
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch._check(start + s <= shape.max_context)
        positions = (torch.arange(s, device=tokens.device) + input_pos[0]).unsqueeze(0)

        def attention(i, attn, x, cos, sin):
            q, k, v = self.body.project(attn, x, cos, sin, heads_first=False)  # [1, S, heads, D]
            k_cache, v_cache = getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}")
            torch.ops.llama.update_cache(k, k_cache, start)
            torch.ops.llama.update_cache(v, v_cache, start)
            # is_causal: query j (at start + j) sees positions <= start + j; nothing past them is read
            out = torch.ops.llama.custom_sdpa(q, k_cache, v_cache, start, None, 0.0, True, self.body.scale)
            return attn.o_proj(out.reshape(1, s, shape.heads * shape.head_dim))

        return self.body.run(tokens, positions, attention=attention)


def load_llm_kernels() -> None:
    """Register ExecuTorch's LLM kernels (`torch.ops.llama.*`, for export and eager runs, and their
    ExecuTorch kernels in this process's runtime, for loading programs that use them)."""
    try:
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: the kernels' shared library failed to load
        raise ConfigError(f"ExecuTorch's LLM kernels (executorch.extension.llm.custom_ops) are not usable here: {exc}; "
                          "install the executorch package pinned in pyproject.toml") from exc


class StateCache(nn.Module):
    """Core ML's stateful-model contract (Apple's documented pattern): ``forward(input_ids [1,S],
    causal_mask [1,1,S,T]) -> logits [1,S,V]`` where T = past + S; the cache lives in float16
    buffers (Core ML states must be fp16) converted as `ct.StateType`s, written at [T-S, T). The
    write position comes from the inputs' shapes, so no tensor value steers the graph."""

    def __init__(self, model: nn.Module, shape: DecoderShape) -> None:
        super().__init__()
        self.body = DecoderBody(model, shape)
        cache = (shape.layers, 1, shape.kv_heads, shape.max_context, shape.head_dim)
        self.register_buffer("k_cache", torch.zeros(cache, dtype=torch.float16), persistent=False)
        self.register_buffer("v_cache", torch.zeros(cache, dtype=torch.float16), persistent=False)

    def forward(self, input_ids: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        s, t = input_ids.shape[-1], causal_mask.shape[-1]
        past = t - s
        positions = (torch.arange(s, dtype=torch.int32) + past).unsqueeze(0)

        def history(i, k, v):
            self.k_cache[i:i + 1, :, :, past:t, :] = k.unsqueeze(0).to(torch.float16)
            self.v_cache[i:i + 1, :, :, past:t, :] = v.unsqueeze(0).to(torch.float16)
            return self.k_cache[i, :, :, :t, :].to(k.dtype), self.v_cache[i, :, :, :t, :].to(v.dtype), causal_mask

        return self.body.run(input_ids, positions, history)


def causal_mask(past: int, new: int) -> torch.Tensor:
    """[1, 1, new, past + new] additive mask: query i (at past + i) sees keys 0 .. past + i."""
    q = torch.arange(new).unsqueeze(1) + past
    k = torch.arange(past + new).unsqueeze(0)
    return torch.where(k <= q, 0.0, _NEG).float().view(1, 1, new, past + new)


class Swappable(nn.Module):
    """`inner(*args)` with the task's adapter tensors (named as in `model.named_parameters()`)
    passed as trailing inputs instead of stored in the graph."""

    def __init__(self, inner: nn.Module, names: list[str], n_args: int) -> None:
        super().__init__()
        self.inner = inner
        self.names = [f"body.model.{n}" for n in names]
        self.n_args = n_args

    def forward(self, *args):
        fixed, adapter = args[:self.n_args], args[self.n_args:]
        params = {n: a.float() for n, a in zip(self.names, adapter)}  # float16 adapter files: compute in float32
        return torch.func.functional_call(self.inner, params, fixed, strict=False)


def empty_past(shape: DecoderShape, batch: int = 1) -> list[torch.Tensor]:
    return [torch.zeros(batch, shape.kv_heads, 0, shape.head_dim) for _ in range(2 * shape.layers)]


def past_names(shape: DecoderShape, prefix: str) -> list[str]:
    """past_key_values.0.key, past_key_values.0.value, ... (or present.N.key ...)."""
    return [f"{prefix}.{i}.{kv}" for i in range(shape.layers) for kv in ("key", "value")]


def block_int8(x: torch.Tensor, block: int) -> torch.Tensor:
    """x rounded as MLAS's int8 path quantizes a MatMulNBits input (accuracy_level 4): per block of
    `block` along the last axis, symmetric, q = round(x * 127 / max|x|), back to float."""
    blocks = x.reshape(*x.shape[:-1], x.shape[-1] // block, block)
    amax = blocks.abs().amax(-1, keepdim=True)
    inverse = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.round(blocks * inverse).clamp(-127, 127)
    return (q * (amax / 127.0)).reshape(x.shape)


def round_head_input(model: nn.Module, block: int) -> nn.Module:
    """Make `model`'s LM head see its input as an int8 MatMulNBits head does (`block_int8`), in
    place: the PyTorch reference of an ONNX artifact whose head runs int8 activations."""
    model.get_output_embeddings().register_forward_pre_hook(
        lambda _m, args: (block_int8(args[0], block), *args[1:]))
    return model
