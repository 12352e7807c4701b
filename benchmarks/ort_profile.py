"""Where an ONNX model spends its time: ONNX Runtime's profiler, kernel time summed per op type.

    python -m benchmarks.ort_profile MODEL.ort --inputs WORK/rotten_tomatoes_64.npz --runs 60

`--inputs` is the .npz of token ids and masks that `benchmarks.classify_latency` writes to its
work folder; batch 1, one example per run. Prints the top op types with their share, ms per run
and node count.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--inputs", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    data = np.load(args.inputs)
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    sess = ort.InferenceSession(str(args.model), opts, providers=["CPUExecutionProvider"])
    for i in range(args.runs):
        sess.run(None, {"input_ids": data["ids"][i:i + 1], "attention_mask": data["mask"][i:i + 1]})
    trace = Path(sess.end_profiling())
    total, count = collections.Counter(), collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name")
            total[op] += event["dur"]
            count[op] += 1
    trace.unlink()
    all_us = sum(total.values())
    for op, us in total.most_common(args.top):
        print(f"{op:28s} {100 * us / all_us:5.1f}%  {us / args.runs / 1000:.3f} ms/run  {count[op] // args.runs} nodes")
    print(f"total kernel time {all_us / args.runs / 1000:.3f} ms/run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
