"""Probe: does backbone.ptd hold a tied int4 table once (lookup + XNNPACK head), as it does int8?

Run from the repository root: .venv/bin/python docs/results/2026-12-07/int4-table-probe/int4_table_probe.py {8,4}
A 4096 x 128 table, group 32 for int4: the embedding lookup (torchao IntxWeightOnlyConfig, fused to
quantized_decomposed::embedding_byte / embedding_4bit) and an XNNPACK head (8da8w / 8da4w) with the same
codes and scales, every constant tagged out to the external data file as `--mode shared` does."""
import sys, torch
from torch import nn
from torchao.quantization import quantize_, IntxWeightOnlyConfig, Int8DynamicActivationIntxWeightConfig
from torchao.quantization.granularity import PerGroup, PerAxis
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
from executorch.exir.passes.quant_fusion_pass import quant_fusion_and_const_prop_pass
from calora.targets.executorch_shared import tag_backbone_constants, external_tag, external_data

bits = int(sys.argv[1]); V, D, G = 4096, 128, 32
torch.manual_seed(0)
table = torch.randn(V, D)
class M(nn.Module):
    def __init__(s):
        super().__init__(); s.emb = nn.Embedding(V, D); s.head = nn.Sequential(nn.Linear(D, V, bias=False))
        with torch.no_grad(): s.emb.weight.copy_(table); s.head[0].weight.copy_(table)
    def forward(s, ids): return s.head(s.emb(ids))
m = M().eval()
wd = torch.int4 if bits == 4 else torch.int8
gran = PerGroup(G) if bits == 4 else PerAxis(0)
quantize_(m, IntxWeightOnlyConfig(weight_dtype=wd, granularity=gran), filter_fn=lambda mod, fqn: fqn == "emb")
quantize_(m.head, Int8DynamicActivationIntxWeightConfig(weight_dtype=wd, weight_granularity=gran))
# same codes and scales in both
e, h = m.emb.weight, m.head[0].weight
h.qdata = e.qdata.clone(); h.scale = e.scale.clone().reshape(h.scale.shape); h.zero_point = torch.zeros_like(h.zero_point)
e.zero_point = torch.zeros_like(e.zero_point)
print("qdata", e.qdata.shape, e.qdata.dtype, "scale", e.scale.shape, e.scale.dtype, h.scale.dtype)
ids = torch.tensor([[1, 2, 3]])
ep = torch.export.export(m, (ids,), strict=False)
ep = tag_backbone_constants(ep, frozenset())
edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
quant_fusion_and_const_prop_pass(edge.exported_program())
sig = edge.exported_program().graph_signature
ops = sorted({str(n.target) for n in edge.exported_program().graph.nodes if n.op == "call_function"})
print("ops outside delegates", [o for o in ops if "delegate" not in o and "getitem" not in o])
et = edge.to_executorch(ExecutorchBackendConfig(external_constants=external_tag({**sig.inputs_to_parameters, **sig.inputs_to_buffers}, frozenset())))
prog = bytes(et.buffer); data = external_data(et)
one = V * D * bits // 8
print(f"bits {bits}: program {len(prog)} B, backbone.ptd {len(data)} B; one copy of the codes {one} B -> {len(data)/one:.2f} copies (scales included)")
