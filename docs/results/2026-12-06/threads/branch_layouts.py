"""Microbenchmark (2026-12-06): the LoRA and recovery branches of a SmolLM2 decode step alone, in
five graph layouts, random weights of the real shapes (hidden 576, MLP 1536, LoRA rank 8 on q and v,
recovery rank 8 on all 7 linears, 30 layers), one-row input, ONNX Runtime at 2 threads, median of 300
runs. Each branch output is added to a constant standing in for its base projection.

- v0: as exported: per linear, recovery (MatMul, Gelu, MatMul) and LoRA (MatMul, MatMul) apart;
- v1: per linear, LoRA folded into the recovery product as act(xA) - act(-xA) = xA (exact for
  GELU, ReLU and SiLU): rows [D; A; -A] down, [U, B, -B] up;
- v2: v1 grouped by shared input (q/k/v, gate/up): one down product, a Split, per-linear ups;
- v3: v2 with one block-diagonal up product per group and a Split of its output;
- v4: v3 without the Split (bases packed, so the group's output is added once).

    python branch_layouts.py v0   # ... v4; prints nodes and median ms
"""
import numpy as np, onnxruntime as ort, time, statistics, sys
from onnx import helper, TensorProto, numpy_helper
H, I, r, rr, L = 576, 1536, 8, 8, 30
rng = np.random.default_rng(0)
def W(*s): return (rng.standard_normal(s)*0.02).astype(np.float32)
nodes, inits = [], []
cnt = [0]
def init(a):
    cnt[0]+=1; n=f"w{cnt[0]}"; inits.append(numpy_helper.from_array(a, n)); return n
def node(op, ins, nout=1, **kw):
    cnt[0]+=1; outs=[f"t{cnt[0]}_{i}" for i in range(nout)]
    nodes.append(helper.make_node(op, ins, outs, **kw)); return outs if nout>1 else outs[0]
def mm(x, w): return node("MatMul", [x, init(w)])
# groups: (input dim, [(out, lora?)])
groups = [(H, [(H, True), (192, False), (192, True)]), (H, [(H, False)]), (H, [(I, False), (I, False)]), (I, [(H, False)])]
variant = sys.argv[1]
x = "x"; outs = []
for layer in range(L):
    for din, members in groups:
        xin = x if din == H else "xi"
        if variant == "v0":  # per linear: recovery + lora separate
            for out, lora in members:
                y = mm(node("Gelu", [mm(xin, W(din, rr))]), W(rr, out))
                if lora: y = node("Add", [y, mm(mm(xin, W(din, r)), W(r, out))])
                outs.append(y)
        elif variant == "v1":  # per linear: +-A folded
            for out, lora in members:
                R = rr + (2*r if lora else 0)
                outs.append(mm(node("Gelu", [mm(xin, W(din, R))]), W(R, out)))
        elif variant in ("v2", "v3"):  # grouped down; v2: split + per-linear up; v3: block-diag up
            Rs = [rr + (2*r if lora else 0) for _, lora in members]
            h = node("Gelu", [mm(xin, W(din, sum(Rs)))])
            if variant == "v3" or len(members) == 1:
                y = mm(h, W(sum(Rs), sum(o for o, _ in members)))
                if len(members) > 1:
                    ys = node("Split", [y, init(np.array([o for o,_ in members], np.int64))], nout=len(members), axis=-1)
                    outs += ys
                else: outs.append(y)
            else:
                hs = node("Split", [h, init(np.array(Rs, np.int64))], nout=len(members), axis=-1)
                for hi, R, (o, _) in zip(hs, Rs, members): outs.append(mm(hi, W(R, o)))
        elif variant == "v4":  # v3 but bases packed: output stays concatenated (one Add per group)
            Rs = [rr + (2*r if lora else 0) for _, lora in members]
            h = node("Gelu", [mm(xin, W(din, sum(Rs)))])
            outs.append(mm(h, W(sum(Rs), sum(o for o, _ in members))))
# one Add per output to a base (simulated by a constant), then reduce to one scalar output
final = []
for y in outs:
    final.append(node("Add", [y, init(W(1, 1, 1))]))
# keep outputs alive: ReduceSum each? add as graph outputs
g = helper.make_graph(nodes, "b", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, H]),
                                   helper.make_tensor_value_info("xi", TensorProto.FLOAT, [1, 1, I])],
                      [helper.make_tensor_value_info(f, TensorProto.FLOAT, None) for f in final], inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
so = ort.SessionOptions(); so.intra_op_num_threads = 2
s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
feeds = {"x": W(1, 1, H), "xi": W(1, 1, I)}
for _ in range(20): s.run(None, feeds)
ts = []
for _ in range(300):
    t = time.perf_counter(); s.run(None, feeds); ts.append((time.perf_counter()-t)*1e3)
print(variant, "nodes", len(nodes)+len(final), "median ms %.3f" % statistics.median(ts))
