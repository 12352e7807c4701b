"""XNNPACK int4 linears at batch 1 x 64 tokens, MiniLM-L6 shapes (6 blocks of q, k, v, o, up, down): group 32 vs 64 vs 128
vs per channel, vs int8 per channel, each a program of its own, timed round by round in ExecuTorch's Python runtime.
Run from the repository root: .venv/bin/python docs/results/2026-12-07/int4-group/qb4w_group_probe.py [ROUNDS]"""
import time, statistics, sys, torch
from torch import nn
from torchao.quantization import quantize_, Int8DynamicActivationIntxWeightConfig
from torchao.quantization.granularity import PerGroup, PerAxis
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.runtime import Runtime

H, F, L = 384, 1536, 6
class Block(nn.Module):
    def __init__(s):
        super().__init__(); s.q, s.k, s.v, s.o = (nn.Linear(H, H) for _ in range(4)); s.up = nn.Linear(H, F); s.down = nn.Linear(F, H)
    def forward(s, x):
        x = x + s.o(s.q(x) + s.k(x) + s.v(x)); return x + s.down(torch.relu(s.up(x)))
class M(nn.Module):
    def __init__(s): super().__init__(); s.blocks = nn.Sequential(*[Block() for _ in range(L)])
    def forward(s, x): return s.blocks(x)

configs = {"int4 g32": (torch.int4, PerGroup(32)), "int4 g64": (torch.int4, PerGroup(64)), "int4 g128": (torch.int4, PerGroup(128)),
           "int4 per-channel": (torch.int4, PerAxis(0)), "int8 per-channel": (torch.int8, PerAxis(0))}
x = torch.randn(1, 64, H)
methods = {}
for name, (wd, g) in configs.items():
    torch.manual_seed(0); m = M().eval()
    quantize_(m, Int8DynamicActivationIntxWeightConfig(weight_dtype=wd, weight_granularity=g))
    ep = torch.export.export(m, (x,), strict=False)
    et = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    prog = Runtime.get().load_program(bytes(et.buffer))
    methods[name] = (prog, prog.load_method("forward"))
    print(name, len(et.buffer), "bytes", flush=True)
times = {n: [] for n in methods}
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 7):
    for n, (_, meth) in methods.items():
        for _ in range(5): meth.execute([x])
        t = []
        for _ in range(40):
            t0 = time.perf_counter(); meth.execute([x]); t.append(time.perf_counter() - t0)
        times[n].append(statistics.median(t) * 1e3)
base = statistics.median(times["int4 g32"])
for n, v in times.items():
    print(f"{n:<18} median {statistics.median(v):.3f} ms  ({statistics.median(v)/base:.2f}x int4 g32)  rounds {[round(a,3) for a in v]}")
