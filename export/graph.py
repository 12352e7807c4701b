"""Export-ready views of a trained task model, shared by every target.

- `deployable(model)`: a copy in which each calora `QuantLinear` becomes a plain `nn.Linear` holding
  exactly its dequantized weight (the target's own quantizer re-quantizes it; because the values
  already lie on the symmetric per-group grid, a quantizer with the same group size and scale rule
  gives back the same codes) and `QuantEmbedding` an `nn.Embedding`. Simulated activation
  quantization is dropped: the target's kernels quantize activations themselves.
- `backbone_linears(model)`: the names of the linear layers that belong to the compressed backbone
  (what a target quantizes); LoRA, recovery and head layers are never in it.
- `adapter_names(model)`: the task-specific tensors (LoRA, recovery, head) in a fixed order.
- `Baked` / `Swappable`: forward(input_ids, attention_mask[, *adapter tensors]) -> logits.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from calora.targets import adapter_codec
from calora.targets.base import AdapterDType
from calora.train.backbones import head_modules
from calora.train.compress import compressible_linears
from calora.train.quant import QuantEmbedding, QuantLinear

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("logits",)


def deployable(model: nn.Module) -> nn.Module:
    """A deep copy with float layers carrying the exact trained (dequantized) values."""
    model = copy.deepcopy(model).cpu().eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantLinear):
            lin = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            with torch.no_grad():
                lin.weight.copy_(module.weight)
                if module.bias is not None:
                    lin.bias.copy_(module.bias)
            _set(model, name, lin)
        elif type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
            _set(model, name, _dequantize_bnb(module))  # the target re-quantizes to spec.deploy_quant
        elif isinstance(module, QuantEmbedding):
            emb = nn.Embedding(module.num_embeddings, module.embedding_dim, padding_idx=module.padding_idx)
            with torch.no_grad():
                emb.weight.copy_(module.weight)
            _set(model, name, emb)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def trim_positions(model: nn.Module, max_length: int) -> int:
    """Cut learned absolute position tables (BERT family) of a deployable copy to the `max_length`
    positions the bundle takes (its manifest's max_sequence_length), with their index buffers; sets
    the copy's `config.max_position_embeddings` to match. Outputs for inputs up to `max_length`
    tokens are unchanged. Returns the float32 bytes removed (MiniLM at 64 tokens: 0.69 MB, which
    a dynamic-shape ONNX graph would otherwise store whole; fixed-shape targets fold it anyway)."""
    saved = 0
    for module in model.modules():
        table = getattr(module, "position_embeddings", None)
        if not isinstance(table, nn.Embedding) or table.num_embeddings <= max_length:
            continue
        cut = nn.Embedding(max_length, table.embedding_dim, padding_idx=table.padding_idx
                           if table.padding_idx is not None and table.padding_idx < max_length else None)
        with torch.no_grad():
            cut.weight.copy_(table.weight[:max_length])
        cut.weight.requires_grad_(False)
        saved += (table.num_embeddings - max_length) * table.embedding_dim * table.weight.element_size()
        module.position_embeddings = cut
        for name in ("position_ids", "token_type_ids"):  # index buffers as long as the table
            buf = getattr(module, name, None)
            if isinstance(buf, torch.Tensor) and buf.dim() == 2 and buf.shape[1] > max_length:
                module.register_buffer(name, buf[:, :max_length].clone(), persistent=False)
    if saved and getattr(getattr(model, "config", None), "max_position_embeddings", 0) > max_length:
        model.config.max_position_embeddings = max_length
    return saved


def _dequantize_bnb(module: nn.Module) -> nn.Linear:
    """A bitsandbytes layer as the float nn.Linear it computes with (no mobile runtime runs NF4)."""
    import bitsandbytes as bnb

    if type(module).__name__ == "Linear4bit":
        weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
    else:  # LLM.int8: row-wise absmax scales in SCB
        weight = module.weight.data.float() * module.weight.SCB.float().unsqueeze(1) / 127.0
    lin = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight.float().cpu().reshape(module.out_features, module.in_features))
        if module.bias is not None:
            lin.bias.copy_(module.bias.float().cpu())
    return lin


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def backbone_linears(model: nn.Module) -> list[str]:
    """Backbone linear layers, the only ones a target may quantize (inside an AdaptedLinear the
    `.base_layer`; never LoRA, recovery or head layers)."""
    return compressible_linears(model)


def adapter_names(model: nn.Module) -> list[str]:
    """Parameter names of everything task-specific, in module order."""
    heads = tuple(f"{h}." for h in head_modules(model))
    return [n for n, _ in model.named_parameters()
            if ".lora_A." in n or ".lora_B." in n or ".recovery." in n or n.startswith(heads)]


def adapter_tensors(model: nn.Module, dtype: AdapterDType = AdapterDType.FLOAT32) -> dict[str, torch.Tensor]:
    """The task-specific tensors as a swappable artifact stores them (`dtype`: see AdapterDType;
    int8 adds a `<name>.scale` tensor after each LoRA/recovery matrix, `adapter_codec`)."""
    params = dict(model.named_parameters())
    return adapter_codec.encode({n: params[n] for n in adapter_names(model)}, AdapterDType(dtype))


def round_adapter(model: nn.Module, dtype: AdapterDType) -> nn.Module:
    """A copy of `model` whose adapter tensors hold the values an artifact storing them in `dtype`
    computes with (float32 tensors on the `dtype` grid): the reference for program-level checks."""
    model = copy.deepcopy(model)
    params = dict(model.named_parameters())
    grid = adapter_codec.rounded({n: params[n] for n in adapter_names(model)}, AdapterDType(dtype))
    with torch.no_grad():
        for n, t in grid.items():
            params[n].copy_(t)
    return model


def adapter_rounding_error(model: nn.Module, dtype: AdapterDType,
                           rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """What storing the adapter in `dtype` costs before any runtime is involved: the largest
    |rounded - trained| adapter value, and the largest logit change it causes in PyTorch over the
    given (input_ids, attention_mask) rows (0.0 for float32). Measured on one `deployable` copy
    (float activations), the reference the float runtimes are validated against: the training
    model's simulated int8 activations round discontinuously, so through 30 decoder layers a 1e-4
    adapter change can flip activation codes and inflate the figure 100-fold without saying
    anything about the artifacts."""
    model = deployable(model)
    names = adapter_names(model)
    params = dict(model.named_parameters())
    rounded = adapter_codec.rounded({n: params[n] for n in names}, AdapterDType(dtype))
    weight = max((float((rounded[n] - params[n].detach().float()).abs().max()) for n in names), default=0.0)
    logit = 0.0
    with torch.no_grad():
        for input_ids, attention_mask in rows:
            ref = Baked(model).eval()(input_ids, attention_mask).float()
            got = Swappable(model, names).eval()(input_ids, attention_mask, *[rounded[n] for n in names]).float()
            logit = max(logit, float((got - ref).abs().max()))
    return {"adapter_max_abs": weight, "adapter_logit_max_abs": logit}


class Baked(nn.Module):
    """logits = model(input_ids, attention_mask): the task's weights are constants of the graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.extra = _no_cache(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **self.extra).logits


class Swappable(nn.Module):
    """logits = model(input_ids, attention_mask) with the task's tensors passed in as inputs,
    so one backbone graph serves every task whose adapter has the same layout. Inputs of another
    dtype (float16 adapter files) are cast to float32 first: the graph computes in float32."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)
        self.extra = _no_cache(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *adapter: torch.Tensor) -> torch.Tensor:
        params = {n: a.float() for n, a in zip(self.names, adapter)}
        return torch.func.functional_call(self.model, params, (), {"input_ids": input_ids,
                                                                   "attention_mask": attention_mask, **self.extra}).logits


def _no_cache(model: nn.Module) -> dict[str, bool]:
    """{"use_cache": False} for a decoder classifier (Llama, Qwen2...): the logits are the same, but
    with the default cache every layer appends its keys and values to a new DynamicCache, a
    one-tensor `cat` per key and value that XNNPACK does not take, so each layer of an ExecuTorch
    program split in two (SmolLM2: 33 delegate calls for 30 layers, 3 without the cache; the time
    per example did not change measurably). Encoders take no such flag."""
    return {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}


def check_same_layout(models: dict[str, nn.Module]) -> list[str]:
    """Swappable mode needs every task's adapter tensors to have the same names and shapes."""
    from calora.train.errors import AdapterMismatchError

    layouts = {task: {n: tuple(t.shape) for n, t in adapter_tensors(m).items()} for task, m in models.items()}
    first_task, first = next(iter(layouts.items()))
    for task, layout in layouts.items():
        if layout != first:
            diff = sorted(set(layout.items()) ^ set(first.items()))[:3]
            raise AdapterMismatchError(f"--mode swappable: task {task!r} has an adapter layout different from "
                                       f"{first_task!r} (e.g. {diff}); export them baked, or train with the same "
                                       "LoRA targets/ranks, recovery rank and number of labels")
    return list(first)


def example_inputs(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"].to(torch.long), enc["attention_mask"].to(torch.long)


def smoke_stats(reference: torch.Tensor, got: torch.Tensor, runtime: str) -> dict:
    """Max |logit error| and argmax agreement of an artifact's outputs against PyTorch's."""
    got = torch.as_tensor(got, dtype=torch.float32)
    return {"runtime": runtime, "examples": int(reference.shape[0]),
            "max_abs_logit_error": float((reference - got).abs().max()),
            "argmax_agreement": float((reference.argmax(-1) == got.argmax(-1)).float().mean())}
