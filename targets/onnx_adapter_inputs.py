"""A swappable ONNX graph's adapter inputs: overridable, stored as the adapter files store them,
widened to float32 inside the graph (shared by the classification and onnxruntime-genai targets).

The inputs are overridable initializers, so ONNX Runtime cannot fold anything about them:
whatever widens them runs on every run (every decoded token). A Cast widens each float16 or int8
tensor. The exporter consumes each adapter matrix W as `MatMul(x, Transpose(W))`; where that
holds, an int8 matrix's scale multiplies the rank-sized activation next to the MatMul instead of
the whole matrix (x @ (C s)^T = (x @ C^T) s for a scale per row of W, (x s) @ C^T for one per
column; exact up to float rounding): per MiniLM example the matrix-sized Mul cost 0.58 ms, per
SmolLM2 token 15% of the decode speed. Elsewhere a Mul by the scale follows the Cast.
ONNX's own DequantizeLinear was measured 1.6x slower per example (ONNX Runtime handles a
DequantizeLinear feeding a MatMul as a QDQ pattern): not used.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from . import adapter_codec
from .base import AdapterDType

INT8_NOTE = (" (LoRA and recovery matrices as int8 codes, each with a float32 '<name>.scale' input holding one "
             "scale per rank component, applied to the rank-sized activation next to each MatMul, or to the "
             "widened matrix where the exporter used another op; the head float16)")
_NP_DTYPE = {torch.float32: np.float32, torch.float16: np.float16, torch.int8: np.int8}


def adapters_as_defaulted_inputs(proto, names: list[str], dtype: AdapterDType = AdapterDType.FLOAT32) -> None:
    """Make each adapter graph input an overridable initializer that an active LoRA adapter replaces
    (ONNX Runtime then does not demand a feed for it), stored as `adapter_codec` stores it for
    `dtype` (int8 adds one `<name>.scale` input per LoRA/recovery matrix), widened in the graph.

    The defaults are empty along the rank dimension (a LoRA A of [8, 384] gets a [0, 384] default,
    its rank dimension symbolic; its int8 scale a [0, 1] one): a product through a zero rank is
    exactly zero, so without an active adapter the LoRA and recovery branches add nothing, and the
    shared backbone file carries no adapter-sized block of zeros (1.65 MB on MiniLM when the
    defaults were full-size). Head tensors keep full-size all-zero defaults (a few KB; their shapes
    fix the output's)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    inputs = {i.name: i for i in graph.input}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise RuntimeError(f"the exported graph lost adapter inputs {missing[:3]}")
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for x in node.input:
            consumers[x].append(node)
    first: list = []  # nodes that only read graph inputs: placed at the top
    before: dict[int, list] = defaultdict(list)  # id(node) -> nodes to place right before it
    after: dict[int, list] = defaultdict(list)
    renamed: dict[str, str] = {}
    for n in names:
        t = inputs[n].type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        rank_dim = adapter_codec.rank_dim(n)
        rank_name = "lora_rank" if ".lora_" in n else "recovery_rank"
        if rank_dim is not None:
            shape[rank_dim] = 0
            t.shape.dim[rank_dim].Clear()
            t.shape.dim[rank_dim].dim_param = rank_name
        np_dtype = _NP_DTYPE[adapter_codec.stored_dtype(n, dtype)]
        graph.initializer.append(numpy_helper.from_array(np.zeros(shape, dtype=np_dtype), n))
        if np_dtype == np.float32:
            continue
        t.elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(np_dtype))
        scale = None
        if adapter_codec.quantized(n, dtype):
            scale = n + adapter_codec.SCALE_SUFFIX
            scale_shape: list[int | str] = [1, 1]
            scale_shape[rank_dim] = rank_name
            graph.input.append(helper.make_tensor_value_info(scale, TensorProto.FLOAT, scale_shape))
            graph.initializer.append(numpy_helper.from_array(
                np.zeros([0 if isinstance(d, str) else d for d in scale_shape], dtype=np.float32), scale))
        first.append(helper.make_node("Cast", [n], [n + "_f32"], name=n + "_cast", to=TensorProto.FLOAT))
        renamed[n] = n + "_f32"
        if scale is None:
            continue
        pattern = _transposed_matmul(n, consumers)
        if pattern is None:  # scale the whole widened matrix before its use
            first[-1].output[0] = n + "_codes"
            first.append(helper.make_node("Mul", [n + "_codes", scale], [n + "_f32"], name=n + "_dequantize"))
            continue
        transpose, matmul = pattern
        if rank_dim == 1:  # W [out, r]: scale the MatMul's input, whose last dimension is r
            x = matmul.input[0]
            matmul.input[0] = n + "_scaled_input"
            before[id(matmul)].append(helper.make_node("Mul", [x, scale], [matmul.input[0]], name=n + "_dequantize"))
        else:  # W [r, in]: scale the MatMul's output, whose last dimension is r
            y = matmul.output[0]
            matmul.output[0] = n + "_unscaled_output"
            after[id(matmul)] += [
                helper.make_node("Transpose", [scale], [scale + "_row"], name=n + "_scale_row", perm=[1, 0]),
                helper.make_node("Mul", [matmul.output[0], scale + "_row"], [y], name=n + "_dequantize")]
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x in renamed:
                node.input[i] = renamed[x]
    nodes = list(first)
    for node in graph.node:
        nodes += [*before[id(node)], node, *after[id(node)]]
    graph.ClearField("node")
    graph.node.extend(nodes)
    # The exporter's intermediate shapes name the concrete rank; ONNX Runtime infers them again.
    graph.ClearField("value_info")


def _transposed_matmul(name: str, consumers: dict) -> tuple | None:
    """(Transpose, MatMul) where graph input `name` is used only as `MatMul(x, Transpose(name))`."""
    from onnx import helper

    users = consumers.get(name, [])
    if len(users) != 1 or users[0].op_type != "Transpose":
        return None
    transpose = users[0]
    perm = next((list(helper.get_attribute_value(a)) for a in transpose.attribute if a.name == "perm"), None)
    nxt = consumers.get(transpose.output[0], [])
    if perm != [1, 0] or len(nxt) != 1 or nxt[0].op_type != "MatMul" or list(nxt[0].input).index(transpose.output[0]) != 1:
        return None
    return transpose, nxt[0]
