"""Probe: one classification .onnx converted to .ort with and without ONNX Runtime's
SkipLayerNormFusion, timed side by side (5 interleaved rounds of 100 single-example runs, medians),
and the largest logit difference between the two.

    python docs/results/2026-12-07/fused-attention/skipln_probe.py MODEL.onnx INPUTS.npz
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from calora.targets.onnx import CLASSIFY_UNFUSED, _to_ort


def main(model: str, inputs: str) -> None:
    d = np.load(inputs)
    ids, mask = d["ids"][:100], d["mask"][:100]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"SkipLayerNormFusion on": Path(tmp) / "on.ort", "off (CLASSIFY_UNFUSED)": Path(tmp) / "off.ort"}
        _to_ort(Path(model), paths["SkipLayerNormFusion on"])
        _to_ort(Path(model), paths["off (CLASSIFY_UNFUSED)"], CLASSIFY_UNFUSED)
        sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in paths.items()}
        feed = {"input_ids": ids[:1], "attention_mask": mask[:1]}
        a, b = (s.run(None, feed)[0] for s in sessions.values())
        print(f"max |logit difference| on one example: {np.abs(a - b).max():.3g}")
        res = {k: [] for k in sessions}
        for _ in range(5):
            for k, s in sessions.items():
                for i in range(10):
                    s.run(None, {"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1]})
                ts = []
                for i in range(100):
                    t = time.perf_counter()
                    s.run(None, {"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1]})
                    ts.append(time.perf_counter() - t)
                res[k].append(np.median(ts) * 1e3)
        for k, v in res.items():
            print(f"{k:24s} rounds {np.round(v, 2).tolist()} median {np.median(v):.2f} ms")


if __name__ == "__main__":
    main(*sys.argv[1:3])
