"""Quantization of the backbone linears and token embeddings in an exported ONNX graph.

The backbone MatMuls are found by value (the exporter renames and transposes weights), quantized
with ONNX Runtime's own tools, and then given the trained model's integer codes and scales, so the
stored weights equal the trained ones bit for bit:

- int4: `MatMulNBitsQuantizer` (symmetric, block = group size), then the trained codes/scales;
- int8: `quantize_dynamic` (per-channel int8 weights, dynamic int8 activations per tensor: the
  DynamicQuantizeLinear + integer MatMul that ONNX Runtime fuses into DynamicQuantizeMatMul), then
  the trained codes/scales (re-quantizing the dequantized trained weights moves them: the largest
  code of a row dequantizes to 127/127.5 of the row's old maximum, so the scale changes);
- embeddings: the trained int8/int4 codes and scales with Gather / GatherBlockQuantized.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calora.export.graph import backbone_linears
from calora.train.errors import ConfigError


def _backbone_weights(model: torch.nn.Module) -> dict[bytes, str]:
    """sha256 of the transposed (in, out) float32 weight -> backbone linear name."""
    out = {}
    for name in backbone_linears(model):
        w = model.get_submodule(name).weight.detach().float().numpy()
        out[_digest(np.ascontiguousarray(w.T))] = name
    return out


def _digest(a: np.ndarray) -> bytes:
    return hashlib.sha256(str(a.shape).encode() + a.astype(np.float32).tobytes()).digest()


def store_trained_embedding(proto, trained: torch.nn.Module) -> dict[str, float]:
    """Store the token embedding table as the trained integer codes and scales.

    int8 (one scale per row): each Gather of the float table becomes Gather(codes) -> Cast ->
    Mul(Gather(scales)), a quarter of the bytes. int4 (one scale per group): one com.microsoft
    GatherBlockQuantized over the codes packed two per byte (stored code + 8, ONNX Runtime's default
    zero point 8 for 4-bit data in uint8), an eighth of the bytes. Both compute codes * scale in
    float32 exactly as training did, so the values are bit-identical. Returns
    {"embedding_max_abs": error} (0.0), or {} when the trained model has no quantized embedding."""
    from onnx import TensorProto, helper, numpy_helper

    from calora.train.quant import QuantEmbedding

    emb = next((m for m in trained.modules() if isinstance(m, QuantEmbedding)), None)
    if emb is None:
        return {}
    table = emb.weight.detach().cpu().numpy()
    codes = emb.codes.detach().cpu().numpy().astype(np.int8)
    scale = emb.scale.detach().cpu().numpy().astype(np.float32)
    vocab, hidden = table.shape
    group = hidden // scale.shape[1]
    graph = proto.graph
    name = next((i.name for i in graph.initializer if tuple(i.dims) == table.shape
                 and i.data_type == TensorProto.FLOAT and np.array_equal(numpy_helper.to_array(i), table)), None)
    if name is None:
        raise ConfigError("onnx: the trained token embedding table is not an initializer of the exported graph")
    users = [n for n in graph.node if name in n.input]
    if not users or any(n.op_type != "Gather" or n.input[0] != name or
                        any(a.name == "axis" and a.i != 0 for a in n.attribute) for n in users):
        raise ConfigError(f"onnx: the embedding table {name} is used by other ops than a row Gather")
    if emb.bits == 4 and (group < 16 or group & (group - 1) or hidden % 2):
        raise ConfigError(f"onnx: int4 embeddings need a power-of-two group >= 16 (GatherBlockQuantized), got {group}")
    keep = [i for i in graph.initializer if i.name != name]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if emb.bits == 4:
        q = (codes.astype(np.int16) + 8).astype(np.uint8)
        packed = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
        graph.initializer.extend([numpy_helper.from_array(packed, name + "_int4"),
                                  numpy_helper.from_array(scale, name + "_scale")])
    else:
        graph.initializer.extend([numpy_helper.from_array(codes, name + "_int8"),
                                  numpy_helper.from_array(scale.reshape(-1, 1), name + "_scale")])
    nodes = []
    for node in graph.node:
        if node not in users:
            nodes.append(node)
            continue
        idx, out, base = node.input[1], node.output[0], node.name or node.output[0]
        if emb.bits == 4:
            nodes.append(helper.make_node("GatherBlockQuantized", [name + "_int4", idx, name + "_scale"], [out],
                                          name=base + "_int4", domain="com.microsoft", gather_axis=0,
                                          quantize_axis=1, block_size=group, bits=4))
        else:
            nodes += [helper.make_node("Gather", [name + "_int8", idx], [out + "_q"], name=base + "_codes", axis=0),
                      helper.make_node("Gather", [name + "_scale", idx], [out + "_s"], name=base + "_scales", axis=0),
                      helper.make_node("Cast", [out + "_q"], [out + "_f"], name=base + "_cast", to=TensorProto.FLOAT),
                      helper.make_node("Mul", [out + "_f", out + "_s"], [out], name=base + "_dequant")]
    del graph.node[:]
    graph.node.extend(nodes)
    if emb.bits == 4 and not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    dequant = (codes.astype(np.float32).reshape(vocab, -1, group) * scale[..., None]).reshape(vocab, hidden)
    return {"embedding_max_abs": float(np.abs(dequant - table).max())}


def quantize_backbone(proto, model: torch.nn.Module, trained: torch.nn.Module, fmt: str, group: int | None,
              adapter_inputs: set[str] = frozenset(), accuracy_level: int | None = None):
    """Find the backbone MatMuls, quantize only them per `fmt`; returns (proto, weight_error, kept-float text).
    `accuracy_level`: MatMulNBits' activation precision for int4 (None: float activations)."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    by_digest = _backbone_weights(model)
    # Rewrite backbone Gemm (2-D input, transB=1) as MatMul (+ Add), so the quantizers see it.
    new_nodes, backbone = [], {}  # backbone: node name -> (linear name, B initializer name)
    for node in graph.node:
        if node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in inits and node.input[1] not in adapter_inputs:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            b = numpy_helper.to_array(inits[node.input[1]])
            bt = b.T if attrs.get("transB", 0) else b
            lin = by_digest.get(_digest(np.ascontiguousarray(bt))) if b.ndim == 2 else None
            if lin and not attrs.get("transA", 0) and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0:
                bname = node.input[1] + "_t" if attrs.get("transB", 0) else node.input[1]
                if bname not in inits:
                    t = numpy_helper.from_array(np.ascontiguousarray(bt), bname)
                    graph.initializer.append(t)
                    inits[bname] = t
                replacement = _as_matmul(node, bname)
                new_nodes += replacement
                backbone[replacement[0].name] = (lin, bname)
                continue
        if node.op_type == "MatMul" and node.input[1] in inits and node.input[1] not in adapter_inputs:
            b = numpy_helper.to_array(inits[node.input[1]])
            lin = by_digest.get(_digest(np.ascontiguousarray(b))) if b.ndim == 2 else None
            if lin:
                backbone[node.name] = (lin, node.input[1])
        new_nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    # Drop initializers no node uses any more (the pre-transpose Gemm weights).
    used = {i for n in graph.node for i in n.input} | {i.name for i in graph.input}
    keep = [i for i in graph.initializer if i.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(keep)

    expected = set(backbone_linears(model))
    found = {lin for lin, _ in backbone.values()}
    if found != expected:
        raise RuntimeError(f"onnx export: could not find the backbone linears {sorted(expected - found)[:3]} in "
                           "the exported graph (the exporter changed their weights?)")
    matmuls = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    others = [n for n in matmuls if n not in backbone]
    kept = (f"{len(others)} MatMul/Gemm nodes (LoRA lora_A/lora_B, recovery down/up, classifier head, "
            f"attention score products); {len(backbone)} backbone MatMuls quantized" if fmt != "none"
            else "everything")
    trained_w = {lin: model.get_submodule(lin).weight.detach().float().numpy() for lin, _ in backbone.values()}

    with quiet():
        if fmt == "int8":
            _adapter_gemms_as_matmul(proto, adapter_inputs)
        proto = _run_quantizer(proto, backbone, others, trained, fmt, group, accuracy_level)
    err = _stored_weight_error(proto, backbone, trained_w, fmt)
    proto.producer_name = "calora"
    return proto, {"backbone_linear_max_abs": err}, kept


@contextlib.contextmanager
def quiet():
    """ONNX Runtime's quantizers log every node at INFO (and configure the root logger): mute that."""
    import logging

    before = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(before)


def _run_quantizer(proto, backbone: dict, others: list[str], trained, fmt: str, group: int | None,
                   accuracy_level: int | None = None):
    import onnx

    if fmt == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q = MatMulNBitsQuantizer(proto, bits=4, block_size=group, is_symmetric=True, nodes_to_exclude=others,
                                 accuracy_level=accuracy_level)
        q.process()
        proto = q.model.model
        _use_trained_int4_codes(proto, backbone, trained, group)
    elif fmt == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
            onnx.save_model(proto, str(src))
            quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8,
                             nodes_to_quantize=list(backbone), op_types_to_quantize=["MatMul"],
                             # the fused attention's com.microsoft outputs have no inferable type;
                             # every activation of these graphs is float32
                             extra_options={"MatMulConstBOnly": True,
                                            "DefaultTensorType": onnx.TensorProto.FLOAT})
            proto = onnx.load_model(str(dst))
        _use_trained_int8_codes(proto, backbone, trained)
    return proto


def _as_matmul(gemm, b: str) -> list:
    """A plain Gemm (alpha = beta = 1, no transA) as MatMul(A, `b`) plus an Add of its C if it has
    one, writing the Gemm's output: `b` is B already in [K, N] form."""
    from onnx import helper

    base = gemm.name or gemm.output[0]
    has_c = len(gemm.input) > 2 and gemm.input[2]
    mm_out = gemm.output[0] + "_mm" if has_c else gemm.output[0]
    nodes = [helper.make_node("MatMul", [gemm.input[0], b], [mm_out], name=base + "_matmul")]
    if has_c:
        nodes.append(helper.make_node("Add", [mm_out, gemm.input[2]], [gemm.output[0]], name=base + "_bias"))
    return nodes


def _adapter_gemms_as_matmul(proto, adapter_inputs: set[str]) -> None:
    """Rewrite each Gemm whose B is an adapter input as Transpose(B) -> MatMul (+ Add).

    `quantize_dynamic` turns every Gemm into a MatMul, and for a transB Gemm over an initializer it
    stores a transposed copy and drops the original. An adapter input is an initializer too (its
    default), so the swappable graph would lose it as an input, and activating an adapter that
    names it fails ("Invalid input name"). With the Transpose in the graph the input stays."""
    from onnx import helper

    nodes = []
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in adapter_inputs or \
                attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            nodes.append(node)
            continue
        b = node.input[1]
        if attrs.get("transB", 0):
            base = node.name or node.output[0]
            nodes.append(helper.make_node("Transpose", [b], [base + "_bt"], name=base + "_transpose"))
            b = base + "_bt"
        nodes += _as_matmul(node, b)
    proto.graph.ClearField("node")
    proto.graph.node.extend(nodes)


def _use_trained_int8_codes(proto, backbone: dict, trained: torch.nn.Module) -> None:
    """Overwrite `quantize_dynamic`'s per-channel int8 weights and scales ('<B>_quantized' (K, N),
    '<B>_scale' (N,), zero points 0) with the trained layer's own codes and scales, where it holds
    int8 codes per output channel."""
    from onnx import numpy_helper

    from calora.train.quant import QuantLinear

    inits = {i.name: i for i in proto.graph.initializer}
    modules = dict(trained.named_modules())
    for lin, bname in backbone.values():
        mod = modules.get(lin)
        q, s, zp = (inits.get(bname + suffix) for suffix in ("_quantized", "_scale", "_zero_point"))
        if q is None or s is None or zp is None:
            raise RuntimeError(f"quantize_dynamic did not quantize backbone linear {lin} per channel")
        if not (isinstance(mod, QuantLinear) and mod.bits == 8 and mod.group_size is None):
            continue
        codes = np.ascontiguousarray(mod.codes.detach().numpy().astype(np.int8).T)  # (K, N)
        scale = mod.scale.detach().float().numpy().reshape(-1)
        if tuple(q.dims) != codes.shape or int(np.prod(s.dims)) != scale.size or np.any(numpy_helper.to_array(zp)):
            raise RuntimeError(f"unexpected quantize_dynamic layout for {lin}: B {list(q.dims)}, scale {list(s.dims)}")
        q.CopyFrom(numpy_helper.from_array(codes, q.name))
        s.CopyFrom(numpy_helper.from_array(scale.reshape(tuple(s.dims)).astype(np.float32), s.name))


def _matmulnbits_nodes(proto) -> dict[str, Any]:
    """B-initializer base name -> MatMulNBits node (the quantizer names B as '<orig>_Q4')."""
    out = {}
    for n in proto.graph.node:
        if n.op_type == "MatMulNBits":
            out[n.input[1]] = n
    return out


def _use_trained_int4_codes(proto, backbone: dict, trained: torch.nn.Module, group: int) -> None:
    """Overwrite MatMulNBits' B and scales with the trained codes/scales where the trained layer holds
    int4 codes with this group size (then the stored weights equal the trained ones bit for bit)."""
    from onnx import numpy_helper

    from calora.train.quant import QuantLinear

    inits = {i.name: i for i in proto.graph.initializer}
    nodes = _matmulnbits_nodes(proto)
    modules = dict(trained.named_modules())
    for lin, bname in backbone.values():
        node = nodes.get(bname + "_Q4")
        mod = modules.get(lin)
        if node is None:
            raise RuntimeError(f"MatMulNBitsQuantizer did not quantize backbone linear {lin}")
        if not (isinstance(mod, QuantLinear) and mod.bits == 4 and mod.group_size == group):
            continue
        codes = mod.codes.detach().to(torch.int16).numpy()  # (N, K), in [-8, 7]
        scale = mod.scale.detach().float().numpy()  # (N, K // group)
        n_out, k_in = codes.shape
        q = (codes + 8).astype(np.uint8).reshape(n_out, k_in // group, group)
        packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        b_old, s_old = inits[node.input[1]], inits[node.input[2]]
        if tuple(b_old.dims) != packed.shape or int(np.prod(s_old.dims)) != scale.size:
            raise RuntimeError(f"unexpected MatMulNBits layout for {lin}: B {list(b_old.dims)}, scales {list(s_old.dims)}")
        b_old.CopyFrom(numpy_helper.from_array(packed, b_old.name))
        s_old.CopyFrom(numpy_helper.from_array(scale.reshape(tuple(s_old.dims)).astype(np.float32), s_old.name))


def _stored_weight_error(proto, backbone: dict, trained_w: dict[str, np.ndarray], fmt: str) -> float:
    """max |dequantized stored weight - trained weight| over the backbone linears, read from the graph."""
    from onnx import helper, numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    err = 0.0
    if fmt == "none":
        for lin, bname in backbone.values():
            err = max(err, float(np.abs(inits[bname].T - trained_w[lin]).max()))
        return err
    if fmt == "int4":
        nodes = _matmulnbits_nodes(proto)
        for lin, bname in backbone.values():
            node = nodes[bname + "_Q4"]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            k, n, bs = attrs["K"], attrs["N"], attrs["block_size"]
            packed = inits[node.input[1]].reshape(n, -1)
            q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, -1)[:, :k].astype(np.float32)
            zp = 8.0
            if len(node.input) > 3 and node.input[3]:
                raise RuntimeError("asymmetric MatMulNBits is not expected here")
            scales = inits[node.input[2]].reshape(n, -1).astype(np.float32)
            w = (q - zp) * np.repeat(scales, bs, axis=1)[:, :k]  # (N, K)
            err = max(err, float(np.abs(w - trained_w[lin]).max()))
        return err
    # int8 dynamic: '<B>_quantized', '<B>_scale', '<B>_zero_point', per channel along N
    for lin, bname in backbone.values():
        q = inits[bname + "_quantized"].astype(np.float32)  # (K, N)
        scale = inits[bname + "_scale"].astype(np.float32)
        zp = inits[bname + "_zero_point"].astype(np.float32)
        w = (q - zp) * scale  # broadcast over the N axis
        err = max(err, float(np.abs(w.T - trained_w[lin]).max()))
    return err
