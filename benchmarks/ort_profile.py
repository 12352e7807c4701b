"""Where an ONNX model spends its time: ONNX Runtime's profiler, kernel time summed per op type.

    python -m benchmarks.ort_profile MODEL.ort --inputs WORK/rotten_tomatoes_64.npz --runs 60
    python -m benchmarks.ort_profile BUNDLE/onnx/TASK/model.onnx --decode 40 --runs 30 --out r.json

`--inputs` is the .npz of token ids and masks that `benchmarks.classify_latency` writes to its
work folder; batch 1, one example per run. `--decode P` profiles a generative graph's one-token
decode step over a cache of P positions (random keys and values of the shapes the graph declares;
the kernels' cost does not depend on their values), which is what a decode token costs. Prints the
top op types with their share, ms per run and node count, and the median wall time of a run
(profiling included, so above an unprofiled run); `--out` writes them as JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import provenance, write_results


def _decode_feeds(sess, past: int, model: Path) -> dict[str, np.ndarray]:
    """One new token after `past` cached positions, for calora's and onnxruntime-genai's Llama
    decoder contract (input_ids, attention_mask, optional position_ids, past_key_values.N.*). Cache
    dimensions the graph leaves symbolic come from the genai_config.json beside it."""
    rng = np.random.default_rng(0)
    config = model.parent / "genai_config.json"
    decoder = json.loads(config.read_text())["model"]["decoder"] if config.is_file() else {}
    known = {1: decoder.get("num_key_value_heads"), 3: decoder.get("head_size")}
    feeds = {}
    for i in sess.get_inputs():
        if i.name == "input_ids":
            feeds[i.name] = np.array([[5]], np.int64)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((1, past + 1), np.int64)
        elif i.name == "position_ids":
            feeds[i.name] = np.array([[past]], np.int64)
        elif i.name.startswith("past_key_values."):
            heads, dim = (i.shape[a] if isinstance(i.shape[a], int) else known[a] for a in (1, 3))
            if not (isinstance(heads, int) and isinstance(dim, int)):
                raise SystemExit(f"{i.name}: cache shape {i.shape} has no fixed heads/head size")
            feeds[i.name] = rng.standard_normal((1, heads, past, dim)).astype(np.float32)
        else:
            raise SystemExit(f"--decode: unexpected input {i.name} (not a Llama decoder graph?)")
    return feeds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--inputs", type=Path, help="classification: .npz of ids and masks (classify_latency's)")
    what.add_argument("--decode", type=int, metavar="PAST", help="generation: one decode step over PAST cached positions")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    sess = ort.InferenceSession(str(args.model), opts, providers=["CPUExecutionProvider"])
    if args.decode is not None:
        feeds = _decode_feeds(sess, args.decode, args.model)
        batches = [feeds] * (args.warmup + args.runs)
    else:
        data = np.load(args.inputs)
        batches = [{"input_ids": data["ids"][i:i + 1], "attention_mask": data["mask"][i:i + 1]}
                   for i in range(args.warmup + args.runs)]
    wall = []
    for i, feed in enumerate(batches):
        t0 = time.perf_counter()
        sess.run(None, feed)
        if i >= args.warmup:
            wall.append((time.perf_counter() - t0) * 1e3)
    trace = Path(sess.end_profiling())
    total, count = collections.Counter(), collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name")
            total[op] += event["dur"]
            count[op] += 1
    trace.unlink()
    runs = args.warmup + args.runs  # the profiler records the warm-up runs too
    all_us = sum(total.values())
    rows = [{"op": op, "share": us / all_us, "ms_per_run": us / runs / 1000, "nodes": count[op] // runs}
            for op, us in total.most_common()]
    for r in rows[:args.top]:
        print(f"{r['op']:34s} {100 * r['share']:5.1f}%  {r['ms_per_run']:.3f} ms/run  {r['nodes']} nodes")
    kernel_ms = all_us / runs / 1000
    print(f"total kernel time {kernel_ms:.3f} ms/run; median wall {statistics.median(wall):.3f} ms/run "
          f"(profiled); {sum(count.values()) // runs} nodes run")
    write_results(args.out, {**provenance("benchmarks.ort_profile", argv), "model": str(args.model),
                             "decode_past": args.decode, "runs": args.runs, "kernel_ms_per_run": kernel_ms,
                             "median_wall_ms_profiled": statistics.median(wall),
                             "nodes_per_run": sum(count.values()) // runs, "ops": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
