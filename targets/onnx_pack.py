"""Backbone MatMulNBits that read the same input, packed into one, as onnxruntime-genai's builder
packs a Llama layer's q/k/v projections.

A decoder layer's q, k and v projections read the same normed hidden state, as do the MLP's gate
and up projections. Written as one MatMulNBits each, a SmolLM2 decode step runs 7 int4 products
per layer, each its own kernel launch and thread-pool dispatch for a one-row input; packed, it runs
4 and a Split. Measured on SmolLM2 (2 x86 cores, 2026-12-06; docs/results/2026-12-06/threads/
decode_step_threads2.json): a decode step 3% faster with the adapter branches, 7% faster without
them, about 1% at one thread.

The packing is exact: MatMulNBits quantizes each output column over K in blocks, so the packed B is
the members' codes stacked along N and the packed scales theirs stacked the same way; every output
column is computed from the same codes and scales as before (tests compare the outputs bit for bit).
Only backbone MatMulNBits are packed: the adapter branches are plain MatMuls (graph inputs in
swappable graphs) and keep reading the same input.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def pack_shared_input_matmulnbits(proto) -> int:
    """Replace each set of two or more MatMulNBits nodes that read the same input (same K, bits,
    block size and accuracy level; symmetric, no bias) by one packed MatMulNBits followed by a
    Split into the original outputs, in place. Returns how many MatMulNBits nodes fewer the graph has."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    groups: dict[tuple, list] = defaultdict(list)
    for node in graph.node:
        if node.op_type != "MatMulNBits" or len(node.input) != 3:  # zero points, g_idx or bias: leave alone
            continue
        if node.input[1] not in inits or node.input[2] not in inits:
            continue
        a = _attrs(node)
        key = (node.input[0], a["K"], a["bits"], a["block_size"], a.get("accuracy_level", 0))
        groups[key].append(node)
    replaced: dict[int, list] = {}  # id(first member) -> [packed, split]; other members dropped
    dropped: set[int] = set()
    drop_inits: set[str] = set()
    new_inits = []
    fewer = 0
    for key, members in groups.items():
        if len(members) < 2:
            continue
        x, k, bits, block, level = key
        sizes = [int(_attrs(m)["N"]) for m in members]
        bs = [numpy_helper.to_array(inits[m.input[1]]) for m in members]
        ss = [numpy_helper.to_array(inits[m.input[2]]) for m in members]
        b = np.concatenate(bs, axis=0)  # [N, blocks, blob]: one row of blocks per output column
        s = np.concatenate([v.reshape(n, -1) for v, n in zip(ss, sizes)], axis=0)
        s = s.reshape(-1) if ss[0].ndim == 1 else s
        name = members[0].name or members[0].output[0]
        b_name, s_name, sizes_name = f"{name}_packed.B", f"{name}_packed.scales", f"{name}_packed.split"
        new_inits += [numpy_helper.from_array(b, b_name), numpy_helper.from_array(s, s_name),
                      numpy_helper.from_array(np.array(sizes, np.int64), sizes_name)]
        packed_out = f"{name}_packed_out"
        packed = helper.make_node("MatMulNBits", [x, b_name, s_name], [packed_out], name=f"{name}_packed",
                                  domain="com.microsoft", K=k, N=sum(sizes), bits=bits, block_size=block,
                                  accuracy_level=level)
        split = helper.make_node("Split", [packed_out, sizes_name], [m.output[0] for m in members],
                                 name=f"{name}_unpack", axis=-1)
        replaced[id(members[0])] = [packed, split]
        fewer += len(members) - 1
        dropped |= {id(m) for m in members[1:]}
        drop_inits |= {m.input[1] for m in members} | {m.input[2] for m in members}
    if not replaced:
        return 0
    nodes = []
    for node in graph.node:  # the packed node sits where its first member was: its input exists there
        if id(node) in replaced:
            nodes += replaced[id(node)]
        elif id(node) not in dropped:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    still_read = {name for node in nodes for name in node.input}  # an initializer another node shares stays
    keep = [i for i in graph.initializer if i.name not in drop_inits or i.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    return fewer


