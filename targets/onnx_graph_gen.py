"""The ONNX graph of a generative task: the growing-cache decoder, its trained int4 codes kept in
MatMulNBits, and the tied int8 embedding table stored once for both the lookup and the LM head."""

from __future__ import annotations

import numpy as np
import torch

from calora.export.decoder import DecoderShape, Swappable, past_names
from calora.train.errors import ConfigError

from .onnx import OPSET, _strip_metadata
from .onnx_fused import FusedGrowingCache
from .onnx_pack import pack_shared_input_matmulnbits
from .onnx_quant import quantize_backbone, quiet

INPUTS = ("input_ids", "attention_mask", "position_ids")


def io_names(shape: DecoderShape) -> tuple[list[str], list[str]]:
    return [*INPUTS, *past_names(shape, "past_key_values")], ["logits", *past_names(shape, "present")]


def example(shape: DecoderShape, past: int = 5, new: int = 3) -> tuple[torch.Tensor, ...]:
    """Arguments to trace with: sizes above 1 everywhere, so no dimension is specialised."""
    ids = torch.randint(0, shape.vocab, (1, new))
    mask = torch.ones(1, past + new, dtype=torch.long)
    pos = torch.arange(past, past + new).unsqueeze(0)
    cache = [torch.randn(1, shape.kv_heads, past, shape.head_dim) for _ in range(2 * shape.layers)]
    return (ids, mask, pos, *cache)


def export_graph(model: torch.nn.Module, shape: DecoderShape, adapter: dict[str, torch.Tensor] | None = None):
    """The decoder as an ONNX ModelProto, attention and norms as ONNX Runtime's fused contrib ops
    (`onnx_fused`); `adapter` (name -> tensor) makes those tensors graph inputs."""
    module = FusedGrowingCache(model, shape).eval()
    args = example(shape)
    names_in, names_out = io_names(shape)
    if adapter is not None:
        module = Swappable(module, list(adapter), len(args)).eval()
        args = (*args, *adapter.values())
        names_in = [*names_in, *adapter]
    s = torch.export.Dim("sequence", min=1, max=shape.max_context - 2)
    past = torch.export.Dim("past_sequence", min=0, max=shape.max_context - 2)
    total = torch.export.Dim("total_sequence", min=4, max=shape.max_context)
    cache = tuple([{2: past}] * (2 * shape.layers))
    if adapter is None:  # forward(input_ids, attention_mask, position_ids, *past)
        dims = ({1: s}, {1: total}, {1: s}, cache)
    else:  # forward(*args)
        dims = (({1: s}, {1: total}, {1: s}, *cache, *[None] * len(adapter)),)
    with torch.no_grad(), quiet():
        ep = torch.export.export(module, args, dynamic_shapes=dims, strict=False)
        prog = torch.onnx.export(ep, args, dynamo=True, input_names=names_in, output_names=names_out,
                                 opset_version=OPSET, verbose=False)
    proto = prog.model_proto
    _strip_metadata(proto)
    return proto


def quantize(proto, model: torch.nn.Module, trained: torch.nn.Module, fmt: str, group: int | None,
             adapter_inputs: set[str] = frozenset(), accuracy_level: int | None = None):
    """Backbone linears as for classification (`onnx_quant.quantize_backbone`), then the embedding table.

    `accuracy_level` None (the default) runs the body's MatMulNBits with float activations, and
    validation checks it against the trained weights with float activations, its KV cache at half a
    logit step. 4 (`--activations int8`, as onnxruntime-genai's builder emits) runs int8 activations:
    measured on SmolLM2 (2 x86 cores with VNNI and AMX, 2026-12-06) it decodes 1.24-1.31x faster with
    the held-out perplexity unchanged, but MLAS then gives a prompt's logits differently as one prefill
    and token by token (max 0.99-1.19 logits, 2-5 argmax flips in 94 positions), noise of the size
    the trained model's own simulated int8 activations make (1.73 logits). Validation then uses the
    int8-activation gates, as for ExecuTorch (docs/RESULTS.md, section 5)."""
    proto, err, kept = quantize_backbone(proto, model, trained, fmt, group, adapter_inputs=adapter_inputs,
                                         accuracy_level=accuracy_level)
    err |= tied_int8_table(proto, trained)
    pack_shared_input_matmulnbits(proto)  # q/k/v and gate/up as one product each (exact; `onnx_pack`)
    return proto, err, kept


def head_block(hidden: int) -> int | None:
    """MatMulNBits block size of the tied 8-bit LM head: the largest of 128/64/32/16 dividing the
    hidden size. With accuracy_level 4 ONNX Runtime also quantizes the head's input activations to
    int8 per block of this size (symmetric, scale max|x| / 127); validation's reference does the same."""
    return next((b for b in (128, 64, 32, 16) if hidden % b == 0), None)


def tied_int8_table(proto, trained: torch.nn.Module) -> dict[str, float]:
    """Store a tied int8 embedding table once, as the trained codes: the lookup Gathers rows of it
    and dequantizes (codes * row scale, as training computed), the LM head is an 8-bit MatMulNBits
    over the same initializer (one block scale per row, repeated per block: exact). Without this the
    exporter writes the float table twice (lookup and transposed head), 8x the bytes."""
    from onnx import TensorProto, helper, numpy_helper

    from calora.train.quant import QuantEmbedding

    emb = next((m for m in trained.modules() if isinstance(m, QuantEmbedding)), None)
    if emb is None:
        return {}
    table = emb.weight.detach().cpu().numpy()
    codes = emb.codes.detach().cpu().numpy().astype(np.int16)
    scale = emb.scale.detach().cpu().numpy().astype(np.float32).reshape(-1)
    vocab, hidden = table.shape
    block = head_block(hidden)
    if block is None:
        raise ConfigError(f"onnx: hidden size {hidden} is not a multiple of 16; MatMulNBits cannot hold the table")
    graph = proto.graph
    arrays = {i.name: i for i in graph.initializer if i.data_type == TensorProto.FLOAT and
              tuple(i.dims) in (table.shape, table.shape[::-1])}
    lookup = head = None
    for name, init in arrays.items():
        a = numpy_helper.to_array(init)
        if a.shape == table.shape and np.array_equal(a, table):
            lookup = name
        elif a.shape == table.shape[::-1] and np.array_equal(a.T, table):
            head = name
    if lookup is None:
        raise ConfigError("onnx: the trained token embedding table is not an initializer of the exported graph")
    q_name, s_name = "embed_tokens.q8", "embed_tokens.scales"
    nb = hidden // block
    packed = (codes + 128).astype(np.uint8).reshape(vocab, nb, block)
    scales = np.repeat(scale.reshape(vocab, 1), nb, axis=1).astype(np.float32)
    # The head reads the table transposed: as a folded initializer, or through a Transpose node.
    heads = {head} if head is not None else set()
    transposes = [n for n in graph.node if n.op_type == "Transpose" and n.input[0] == lookup]
    heads |= {n.output[0] for n in transposes}
    nodes = []
    for node in graph.node:
        if node in transposes:
            continue
        if node.op_type == "Gather" and node.input[0] == lookup:
            idx, out, base = node.input[1], node.output[0], node.name or node.output[0]
            nodes += [
                helper.make_node("Gather", [q_name, idx], [out + "_q"], name=base + "_codes", axis=0),
                helper.make_node("Reshape", [out + "_q", "embed_tokens.flat"], [out + "_r"], name=base + "_rows"),
                helper.make_node("Cast", [out + "_r"], [out + "_f"], name=base + "_cast", to=TensorProto.FLOAT),
                helper.make_node("Sub", [out + "_f", "embed_tokens.zero"], [out + "_c"], name=base + "_center"),
                helper.make_node("Gather", [s_name, idx], [out + "_s"], name=base + "_scales", axis=0),
                helper.make_node("Mul", [out + "_c", out + "_s"], [out], name=base + "_dequant")]
        elif node.op_type == "MatMul" and node.input[1] in heads:
            # accuracy_level 4 (int8 activations): MLAS has no fast float path for an 8-bit B, and the
            # head took 74 of 80 ms per SmolLM2 decode step without it (13.8 ms with it, 2 cores).
            nodes.append(helper.make_node("MatMulNBits", [node.input[0], q_name, s_name + ".flat"], list(node.output),
                                          name=(node.name or node.output[0]) + "_q8", domain="com.microsoft",
                                          K=hidden, N=vocab, bits=8, block_size=block, accuracy_level=4))
        else:
            nodes.append(node)
    others = [f"{n.op_type}({n.name})" for n in nodes if lookup in n.input or heads & set(n.input)]
    if others:
        raise ConfigError(f"onnx: the embedding table is used by other ops than the lookup and the tied LM head: "
                          f"{others[:3]}")
    del graph.node[:]
    graph.node.extend(nodes)
    keep = [i for i in graph.initializer if i.name not in (lookup, head)]
    del graph.initializer[:]
    graph.initializer.extend(keep + [
        numpy_helper.from_array(packed, q_name), numpy_helper.from_array(scale.reshape(-1, 1), s_name),
        numpy_helper.from_array(scales.reshape(-1), s_name + ".flat"),
        numpy_helper.from_array(np.array(128.0, np.float32), "embed_tokens.zero"),
        numpy_helper.from_array(np.array([0, 0, -1], np.int64), "embed_tokens.flat")])
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    dequant = (codes.astype(np.float32) * scale.reshape(-1, 1))
    return {"embedding_max_abs": float(np.abs(dequant - table).max())}
