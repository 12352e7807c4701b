"""Apply a `CompressionSpec` to a sequence-classification model's backbone, in place.

Only the backbone (``model.<base_model_prefix>``) is compressed: the task head is part of each
task's adapter. Every ``nn.Linear`` of the backbone is compressed; recovery modules later sit
beside exactly these layers.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from .errors import BackboneError, ConfigError
from .quant import QuantEmbedding, QuantLinear, TiedLMHead
from .spec import CompressionSpec, EmbeddingQuant, QuantScheme, SparsityPattern


def backbone_of(model: nn.Module) -> nn.Module:
    prefix = getattr(model, "base_model_prefix", "")
    backbone = getattr(model, prefix, None) if prefix else None
    if backbone is None:
        raise BackboneError(f"{type(model).__name__} has no backbone attribute (base_model_prefix={prefix!r})")
    return backbone


def backbone_prefix(model: nn.Module) -> str:
    return model.base_model_prefix


def compressible_linears(model: nn.Module) -> list[str]:
    """Full names (relative to `model`) of the backbone's linear layers, in module order. Once
    adapters are attached, a wrapped layer appears as ``<name>.base_layer``."""
    prefix = backbone_prefix(model)
    names = []
    for name, module in backbone_of(model).named_modules():
        parts = name.split(".")
        if "lora_A" in parts or "lora_B" in parts or "recovery" in parts:
            continue  # adapter layers inside an AdaptedLinear are not the backbone's
        if isinstance(module, (nn.Linear, QuantLinear)) or _is_bnb_linear(module):
            names.append(f"{prefix}.{name}")
    return names


def _is_bnb_linear(module: nn.Module) -> bool:
    cls = type(module).__name__
    return cls in ("Linear4bit", "Linear8bitLt")


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


# ---- pruning ------------------------------------------------------------------------------------
def magnitude_mask(weight: torch.Tensor, sparsity: float, pattern: SparsityPattern) -> torch.Tensor:
    """Boolean keep-mask. Ties are broken by position (stable sort), so the mask is deterministic."""
    w = weight.detach().abs().float()
    if pattern == SparsityPattern.SEMI_2_4:
        out_f, in_f = w.shape
        if in_f % 4:
            raise BackboneError(f"2:4 sparsity needs in_features divisible by 4, got {in_f}")
        groups = w.reshape(out_f, in_f // 4, 4)
        order = torch.argsort(groups, dim=-1, descending=True, stable=True)
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order[..., :2], True)
        return keep.reshape(out_f, in_f)
    k = int(round(sparsity * w.numel()))
    keep = torch.ones(w.numel(), dtype=torch.bool)
    if k:
        order = torch.argsort(w.flatten(), stable=True)
        keep[order[:k]] = False
    return keep.reshape(w.shape)


#: What structured pruning kept of each sliced linear, by its full name relative to the model:
#: (kept output rows, kept input columns), either None when that side is whole.
KeptChannels = dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]


def _kept(width: int, fraction: float) -> int:
    """How many of `width` channels (or heads) structured pruning keeps."""
    return width - int(round(fraction * width))


def _ffn_blocks(model: nn.Module):
    """Each FFN block of the backbone as (input linears, output linear, their owners' attributes):
    Llama-style gate/up/down or BERT-style intermediate/output."""
    for module in backbone_of(model).modules():
        if hasattr(module, "gate_proj") and hasattr(module, "up_proj") and hasattr(module, "down_proj"):
            yield ([module.gate_proj, module.up_proj], module.down_proj,
                   [(module, "gate_proj"), (module, "up_proj")], (module, "down_proj"))
        elif hasattr(module, "intermediate") and hasattr(module, "output") and hasattr(module.intermediate, "dense"):
            yield [module.intermediate.dense], module.output.dense, [(module.intermediate, "dense")], (module.output, "dense")


def _prune_ffn(model: nn.Module, fraction: float, kept: KeptChannels) -> int:
    """Remove the lowest-scoring FFN channels in every layer (same count per layer). Returns the
    new intermediate size. Score of channel j: ||W_in[j, :]|| * ||W_out[:, j]||."""
    names = {id(m): n for n, m in model.named_modules()}
    new_size = None
    for ins, out, owners, out_owner in list(_ffn_blocks(model)):  # list: the loop replaces the blocks' linears
        width = out.weight.shape[1]
        keep_n = _kept(width, fraction)
        score = out.weight.detach().float().norm(dim=0)
        for lin in ins:
            score = score * lin.weight.detach().float().norm(dim=1)
        keep = torch.sort(torch.argsort(score, descending=True, stable=True)[:keep_n]).values
        for (owner, attr), lin in zip(owners, ins):
            setattr(owner, attr, _slice_linear(lin, rows=keep))
            _record(kept, names[id(lin)], rows=keep)
        setattr(out_owner[0], out_owner[1], _slice_linear(out, cols=keep))
        _record(kept, names[id(out)], cols=keep)
        new_size = keep_n
    if new_size is None:
        raise BackboneError("ffn pruning: no BERT-style or Llama-style FFN blocks found in this backbone")
    return new_size


def _record(kept: KeptChannels, name: str, rows=None, cols=None) -> None:
    """Note what a slice kept; a layer sliced twice (rows by one pass, columns by another) keeps both."""
    old_rows, old_cols = kept.get(name, (None, None))
    kept[name] = (rows if rows is not None else old_rows, cols if cols is not None else old_cols)


def _slice_linear(lin: nn.Linear, rows=None, cols=None) -> nn.Linear:
    w = lin.weight.detach()
    b = None if lin.bias is None else lin.bias.detach()
    if rows is not None:
        w, b = w[rows], (None if b is None else b[rows])
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=w.dtype, device=w.device)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def _bert_layers(model: nn.Module):
    """The encoder layers heads pruning works on (BERT family), or None for other backbones."""
    layers = getattr(getattr(backbone_of(model), "encoder", None), "layer", None)
    if layers is None or not hasattr(layers[0], "attention") or not hasattr(layers[0].attention, "self"):
        return None
    return layers


def _prune_heads(model: nn.Module, fraction: float, kept: KeptChannels) -> None:
    """Remove the lowest-scoring attention heads of every layer (same count per layer; BERT
    family). Score of head h: ||W_v[h]|| * ||W_o[:, h]||. Rows of query/key/value and columns of
    the attention output projection are sliced away, so the stored model really shrinks."""
    layers = _bert_layers(model)
    if layers is None:
        raise BackboneError("heads pruning supports BERT-family backbones only, not "
                            f"{type(backbone_of(model)).__name__}")
    n_heads = model.config.num_attention_heads
    head_dim = model.config.hidden_size // n_heads
    keep_n = _kept(n_heads, fraction)
    if keep_n <= 0:
        raise BackboneError(f"heads pruning of {fraction} would remove all {n_heads} heads")
    names = {id(m): n for n, m in model.named_modules()}
    for layer in layers:
        att = layer.attention.self
        v = att.value.weight.detach().float().reshape(n_heads, head_dim, -1)
        o = layer.attention.output.dense.weight.detach().float().reshape(-1, n_heads, head_dim)
        score = v.flatten(1).norm(dim=1) * o.transpose(0, 1).flatten(1).norm(dim=1)
        heads = torch.sort(torch.argsort(score, descending=True, stable=True)[:keep_n]).values
        cols = (heads.unsqueeze(1) * head_dim + torch.arange(head_dim)).flatten()
        for attr in ("query", "key", "value"):
            _record(kept, names[id(getattr(att, attr))], rows=cols)
            setattr(att, attr, _slice_linear(getattr(att, attr), rows=cols))
        _record(kept, names[id(layer.attention.output.dense)], cols=cols)
        layer.attention.output.dense = _slice_linear(layer.attention.output.dense, cols=cols)
        att.num_attention_heads = keep_n
        att.all_head_size = keep_n * head_dim


# ---- the whole spec -----------------------------------------------------------------------------
#: Group sizes suggested when one does not fit: the power-of-two blocks the int4 kernels take
#: (XNNPACK's blockwise int4, ONNX Runtime's MatMulNBits).
_GROUPS = (16, 32, 64, 128, 256)


def check_group_sizes(model: nn.Module, spec: CompressionSpec) -> None:
    """Refuse, before anything is trained, an int4 group that does not divide the input features of
    every linear as compression will leave them (after structured pruning), or an int4 embedding
    group that does not divide the embedding width. `compress_model` would refuse them too, but
    only after the teacher has trained; this names --compression and the groups that would fit."""
    if spec.quant == QuantScheme.INT4 and spec.group_size:
        widths = {n: model.get_submodule(n).in_features for n in compressible_linears(model)
                  if isinstance(model.get_submodule(n), nn.Linear)}
        pruned = {}
        names = {id(m): n for n, m in model.named_modules()}
        if spec.prune_ffn:
            for _, out, _, _ in _ffn_blocks(model):
                pruned[names[id(out)]] = (_kept(out.in_features, spec.prune_ffn), f"ffn:{spec.prune_ffn:g}")
        layers = _bert_layers(model)
        if spec.prune_heads and layers is not None:
            n_heads = model.config.num_attention_heads
            width = _kept(n_heads, spec.prune_heads) * (model.config.hidden_size // n_heads)
            for layer in layers:
                pruned[names[id(layer.attention.output.dense)]] = (width, f"heads:{spec.prune_heads:g}")
        widths.update({n: w for n, (w, _) in pruned.items() if n in widths})
        bad = next((n for n, w in widths.items() if w % spec.group_size), None)
        if bad is not None:
            fits = [g for g in _GROUPS if all(w % g == 0 for w in widths.values())]
            after = f" after {pruned[bad][1]}" if bad in pruned else ""
            raise ConfigError(
                f"--compression {spec}: int4 group size {spec.group_size} does not divide the {widths[bad]} input "
                f"features of {bad}{after}; group sizes that divide every linear of this backbone: "
                f"{', '.join(f'int4:g{g}' for g in fits) or 'none of ' + ', '.join(map(str, _GROUPS))}")
    group = spec.embeddings.group_size
    emb = model.get_input_embeddings()
    if group and emb is not None and emb.embedding_dim % group:
        raise ConfigError(f"--compression emb:{spec.embeddings.value}: its group of {group} does not divide the token "
                          f"embeddings' width {emb.embedding_dim}")


@torch.no_grad()
def compress_model(model: nn.Module, spec: CompressionSpec, kept: KeptChannels | None = None) -> nn.Module:
    """Compress `model`'s backbone in place (structured pruning, magnitude pruning, quantization)
    and return it. The model should be in float32 on CPU; bnb formats quantize on `.to(device)`.
    `kept`, when given, is filled with what structured pruning kept of each sliced linear (for
    `inherit_through_pruning`)."""
    kept = {} if kept is None else kept
    if spec.prune_heads:
        _prune_heads(model, spec.prune_heads, kept)
    if spec.prune_ffn:
        model.config.intermediate_size = _prune_ffn(model, spec.prune_ffn, kept)
    for name in compressible_linears(model):
        lin = model.get_submodule(name)
        if spec.sparsity:
            lin.weight.mul_(magnitude_mask(lin.weight, spec.sparsity, spec.sparsity_pattern))
        if spec.quant in (QuantScheme.INT4, QuantScheme.INT8):
            try:
                new = QuantLinear.from_linear(lin, spec.quant.bits, spec.group_size, spec.act_quant,
                                              spec.per_tensor_activations)
            except ValueError as exc:
                raise BackboneError(f"cannot quantize {name}: {exc}") from None
            set_module(model, name, new)
        elif spec.quant.is_bnb:
            set_module(model, name, _to_bnb(lin, spec.quant))
    head = output_head(model)
    if spec.embeddings != EmbeddingQuant.NONE:
        emb = model.get_input_embeddings()
        tied = head is not None and getattr(head, "weight", None) is emb.weight
        try:
            quant = QuantEmbedding(emb, spec.embeddings.bits, spec.embeddings.group_size)
        except ValueError as exc:
            raise BackboneError(f"--compression emb:{spec.embeddings.value}: cannot quantize the token embeddings "
                                f"({exc})") from None
        for name, module in list(model.named_modules()):
            if module is emb:
                set_module(model, name, quant)
            elif tied and module is head:
                set_module(model, name, TiedLMHead(quant))  # keep the tie: one table, in the backbone
    for p in backbone_of(model).parameters():
        p.requires_grad_(False)
    if head is not None:  # a causal LM's head is shared backbone, never a task's trainable tensor
        for p in head.parameters():
            p.requires_grad_(False)
    return model


def inherit_through_pruning(tensors: dict[str, torch.Tensor], kept: KeptChannels) -> tuple[dict[str, torch.Tensor], int]:
    """The uncompressed model's LoRA tensors, cut to what structured pruning kept: LoRA-B loses
    the rows of removed outputs, LoRA-A the columns of removed inputs. The inherited update of a
    kept channel is then exactly the teacher's (W + BA restricted to the kept rows and columns is
    W' + B'A'), so inheritance survives heads and FFN pruning. Returns the tensors and how many
    layers were cut."""
    out, cut = dict(tensors), set()
    for name, (rows, cols) in kept.items():
        a, b = f"{name}.lora_A.weight", f"{name}.lora_B.weight"
        if cols is not None and a in out:
            out[a] = out[a][:, cols].contiguous()
            cut.add(name)
        if rows is not None and b in out:
            out[b] = out[b][rows].contiguous()
            cut.add(name)
    return out, len(cut)


def output_head(model: nn.Module) -> nn.Module | None:
    """A causal LM's LM head (None for a classifier, whose head is the task's)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, nn.Module) else None


def _to_bnb(lin: nn.Linear, scheme: QuantScheme) -> nn.Module:
    import bitsandbytes as bnb  # only bnb specs need it

    has_bias = lin.bias is not None
    if scheme == QuantScheme.NF4:
        new = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=has_bias,
                                compute_dtype=torch.float32, quant_type="nf4")
        new.weight = bnb.nn.Params4bit(lin.weight.data.clone(), requires_grad=False, quant_type="nf4")
    else:
        new = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=has_bias, has_fp16_weights=False)
        new.weight = bnb.nn.Int8Params(lin.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
    if has_bias:
        new.bias = nn.Parameter(lin.bias.data.clone(), requires_grad=False)
    # bitsandbytes quantizes when the layer is moved to its device: do it now, so the
    # fingerprint is taken of the quantized storage (on the device training will run on).
    return new.to("cuda" if torch.cuda.is_available() else "cpu")


# ---- what it costs and who it is ----------------------------------------------------------------
def _stored_tensors(model: nn.Module):
    """(name, tensor) pairs that define the compressed backbone, in a fixed order."""
    prefix = backbone_prefix(model)
    for name, t in sorted(backbone_of(model).state_dict().items()):
        if ".lora_" in name or ".recovery." in name:
            continue  # adapters are not the backbone
        yield f"{prefix}.{name.replace('.base_layer.', '.')}", t
    head = output_head(model)  # an untied LM head is shared backbone too (a tied one is the embeddings)
    weight = getattr(head, "weight", None) if head is not None else None
    if isinstance(weight, torch.Tensor) and weight is not getattr(model.get_input_embeddings(), "weight", None):
        yield "lm_head.weight", weight


def fingerprint(model: nn.Module) -> str:
    """SHA-256 over the compressed backbone's stored tensors (names, dtypes, shapes, bytes).

    Adapters record it; export and validation refuse an adapter whose backbone differs."""
    h = hashlib.sha256()
    for name, t in _stored_tensors(model):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def stored_size(model: nn.Module, spec: CompressionSpec) -> dict[str, int]:
    """Bytes a target stores for the backbone, counted per tensor in its deployed format.

    ``dense``: integer codes packed at their bit width (pruned zeros stored as codes, as XNNPACK and
    ORT do) + float32 scales + everything else in float32. ``sparse``: the same, but pruned layers
    stored as a 1-bit mask + non-zero codes (Core ML's sparse format). ``fp32``: the uncompressed
    size of the same tensors, for the ratio."""
    dense = sparse = fp32 = 0
    backbone = backbone_of(model)
    seen: set[int] = set()
    for module in backbone.modules():
        if isinstance(module, (QuantLinear, QuantEmbedding)):
            n = module.codes.numel()
            bits = module.bits
            nz = int((module.codes != 0).sum())
            scales = module.scale.numel() * 4
            bias = 0 if getattr(module, "bias", None) is None else module.bias.numel() * 4
            dense += (n * bits + 7) // 8 + scales + bias
            sparse += min((n * bits + 7) // 8, (n + 7) // 8 + (nz * bits + 7) // 8) + scales + bias
            fp32 += n * 4 + bias
            seen.update(id(t) for t in module.parameters())
            seen.update(id(t) for t in module.buffers())
        elif _is_bnb_linear(module):
            n = module.in_features * module.out_features
            bits = (spec.deploy_quant or spec.quant).bits
            groups = n // (spec.deploy_group_size or module.in_features)
            bias = 0 if module.bias is None else module.bias.numel() * 4
            dense += (n * bits + 7) // 8 + groups * 4 + bias
            sparse += (n * bits + 7) // 8 + groups * 4 + bias
            fp32 += n * 4 + bias
            seen.update(id(t) for t in module.parameters())
            seen.update(id(t) for t in module.buffers())
    for name, t in list(backbone.named_parameters()) + list(backbone.named_buffers()):
        if ".lora_" in name or ".recovery." in name:
            continue  # adapters are the task's, not the backbone's
        if id(t) in seen or not t.is_floating_point():
            continue
        seen.add(id(t))
        n = t.numel()
        nz = int((t != 0).sum())
        dense += n * 4
        sparse += min(n * 4, (n + 7) // 8 + nz * 4)
        fp32 += n * 4
    return {"fp32_bytes": fp32, "dense_bytes": dense, "sparse_bytes": sparse}
