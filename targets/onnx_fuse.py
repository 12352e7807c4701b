"""Fewer, larger adapter products in a baked ONNX graph.

The adapter adds many tiny nodes beside each backbone linear, and at batch 1 ONNX Runtime's cost
per node, not the arithmetic, is what they cost (docs/RESULTS.md, section 3: the recovery branches
took 2.5 ms of a 9.8 ms example on MiniLM). Two rewrites, both exact up to float rounding:

- **Shared-input down-projections.** q, k and v read the same hidden states, so their LoRA-A and
  recovery-down products (five [in, r] matrices per BERT layer) become one product with the
  matrices side by side, and a Split gives each consumer its slice under its old name.
- **LoRA scale folded in.** `(h @ B) * scale` becomes `h @ (B * scale)`.

Only the baked graph is rewritten (its adapter matrices are constants); nodes are matched by the
trained tensors' values, so anything that does not match exactly stays as it was.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import torch


def _digest(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a, dtype=np.float32)
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).digest()


def _adapter_digests(model: torch.nn.Module) -> tuple[set[bytes], set[bytes]]:
    """(down, up): digests of the [in, r] forms of every LoRA-A / recovery-down weight and of the
    [r, out] forms of every LoRA-B weight, as the exporter stores them for `x @ W`."""
    down, up = set(), set()
    for name, t in model.state_dict().items():
        if t.ndim != 2 or not t.is_floating_point():
            continue
        w = t.detach().float().cpu().numpy()
        if name.endswith((".lora_A.default.weight", ".lora_A.weight", ".recovery.down.weight")):
            down.add(_digest(w.T))
        elif name.endswith((".lora_B.default.weight", ".lora_B.weight")):
            up.add(_digest(w.T))
    return down, up


def fuse_adapter_products(proto, model: torch.nn.Module) -> dict[str, int]:
    """Rewrite `proto` (a baked graph of `model`) in place; returns how many nodes each rewrite
    removed: {"down_projections": ..., "lora_scales": ...}."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    down, up = _adapter_digests(model)
    inits = {i.name: i for i in graph.initializer}
    cache: dict[str, np.ndarray] = {}

    def array(name: str) -> np.ndarray | None:
        init = inits.get(name)
        if init is None or init.data_type != TensorProto.FLOAT or len(init.dims) not in (0, 2):
            return None
        if name not in cache:
            cache[name] = numpy_helper.to_array(init)
        return cache[name]

    def matches(node, digests: set[bytes]) -> bool:
        b = array(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        return b is not None and b.ndim == 2 and _digest(b) in digests

    consumers: dict[str, int] = defaultdict(int)
    for n in graph.node:
        for i in n.input:
            consumers[i] += 1
    producer = {o: n for n in graph.node for o in n.output}

    # LoRA scale: MatMul(h, B) -> Mul(., scalar) with the product used only there.
    folded: dict[int, tuple[str, np.ndarray]] = {}  # id(MatMul) -> (new output name, B * scale)
    dropped: set[int] = set()
    for n in graph.node:
        if n.op_type != "Mul" or len(n.input) != 2:
            continue
        mm = producer.get(n.input[0])
        scale = array(n.input[1])
        if mm is None or scale is None or scale.ndim != 0 or consumers[n.input[0]] != 1 or not matches(mm, up):
            continue
        folded[id(mm)] = (n.output[0], (array(mm.input[1]) * scale).astype(np.float32))
        dropped.add(id(n))

    groups: dict[str, list] = defaultdict(list)
    for n in graph.node:
        if matches(n, down):
            groups[n.input[0]].append(n)
    groups = {a: ns for a, ns in groups.items() if len(ns) > 1}

    nodes, new_inits, emitted = [], [], set()
    for n in graph.node:
        if id(n) in dropped:
            continue
        if id(n) in folded:
            out, b = folded[id(n)]
            name = out + "_w"
            new_inits.append(numpy_helper.from_array(b, name))
            nodes.append(helper.make_node("MatMul", [n.input[0], name], [out], name=(n.name or out) + "_scaled"))
            continue
        members = groups.get(n.input[0]) if n.op_type == "MatMul" else None
        if members and any(m is n for m in members):
            if n.input[0] in emitted:
                continue
            emitted.add(n.input[0])
            mats = [array(m.input[1]) for m in members]
            base = (members[0].name or members[0].output[0]) + "_fused"
            new_inits += [numpy_helper.from_array(np.concatenate(mats, axis=1).astype(np.float32), base + "_w"),
                          numpy_helper.from_array(np.array([m.shape[1] for m in mats], dtype=np.int64), base + "_split")]
            nodes += [helper.make_node("MatMul", [n.input[0], base + "_w"], [base + "_out"], name=base),
                      helper.make_node("Split", [base + "_out", base + "_split"], [m.output[0] for m in members],
                                       name=base + "_split", axis=-1)]
            continue
        nodes.append(n)
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input} | {i.name for i in graph.input}
    keep = [i for i in graph.initializer if i.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(keep)
    return {"down_projections": sum(len(ns) - 2 for ns in groups.values()), "lora_scales": len(dropped)}
