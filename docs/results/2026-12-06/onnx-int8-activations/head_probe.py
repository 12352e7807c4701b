"""Where the rest of the ONNX decode gap goes: SmolLM2's LM head (K 576, N 49,152) as one MatMulNBits
at batch 1, one row, 2 threads: 8-bit (calora: the trained int8 table) against 4-bit (the builder's
int4 head), both at accuracy_level 4, plus one decoder layer's 7 int4 body products for scale.
Random weights (the kernels' speed does not depend on the values); each graph in its own session,
interleaved rounds, medians.

    python docs/results/2026-12-06/onnx-int8-activations/head_probe.py OUT.json
"""
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def matmulnbits(k: int, n: int, bits: int, block: int, level: int):
    rng = np.random.default_rng(0)
    blocks = k // block
    packed = block * bits // 8
    b = rng.integers(0, 256, size=(n, blocks, packed), dtype=np.uint8)
    scales = rng.random(n * blocks, dtype=np.float32) * 0.01
    node = helper.make_node("MatMulNBits", ["x", "B", "scales"], ["y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=block, accuracy_level=level)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(b, "B"), numpy_helper.from_array(scales, "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


CONFIGS = {
    "LM head, 8-bit, block 64, level 4 (calora)": (576, 49152, 8, 64, 4),
    "LM head, 4-bit, block 32, level 4 (builder)": (576, 49152, 4, 32, 4),
    "q_proj / o_proj, int4 g32, level 4": (576, 576, 4, 32, 4),
    "gate / up, int4 g32, level 4": (576, 1536, 4, 32, 4),
    "down_proj, int4 g32, level 4": (1536, 576, 4, 32, 4),
}


def main(out: str) -> None:
    sessions = {name: matmulnbits(*cfg) for name, cfg in CONFIGS.items()}
    x = {name: np.random.default_rng(1).random((1, cfg[0]), dtype=np.float32) for name, cfg in CONFIGS.items()}
    times = {name: [] for name in CONFIGS}
    for name, s in sessions.items():
        for _ in range(50):
            s.run(None, {"x": x[name]})
    for _ in range(7):
        for name, s in sessions.items():
            t0 = time.perf_counter()
            for _ in range(200):
                s.run(None, {"x": x[name]})
            times[name].append((time.perf_counter() - t0) / 200 * 1e3)
    rows = [{"config": name, "K": c[0], "N": c[1], "bits": c[2], "block": c[3], "accuracy_level": c[4],
             "median_ms": statistics.median(times[name])} for name, c in CONFIGS.items()]
    record = {"command": " ".join(sys.argv), "machine": f"{platform.machine()} {platform.processor()}",
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "onnxruntime": ort.__version__,
              "threads": 2, "rounds": 7, "runs_per_round": 200, "rows": rows}
    open(out, "w").write(json.dumps(record, indent=1))
    for r in rows:
        print(f"{r['config']:48s} {r['median_ms']:.3f} ms")


if __name__ == "__main__":
    main(sys.argv[1])
