"""Where an ONNX Runtime task switch from the file goes: `LoraAdapter.Load` + `RunOptions.add_active_adapter`
on synthetic float16 adapter files (the size of the 6.1x MiniLM adapter, 0.84 MB, in 50 or 100 tensors),
with the CPU caches hot (the same two files loaded back to back) and after touching 64 MB in between,
as a model run between two switches does. Medians of 60 switches.

    python docs/results/2026-12-06/task-switch/adapter_load_probe.py docs/results/2026-12-06/task-switch/adapter_load_probe.json
"""
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime

import numpy as np
import onnxruntime as ort


def make(folder: str, name: str, tensors: int, halfs: int) -> str:
    rng = np.random.default_rng(0)
    params = {f"p{i}": ort.OrtValue.ortvalue_from_numpy(rng.random(halfs // tensors).astype(np.float16))
              for i in range(tensors)}
    a = ort.AdapterFormat()
    a.set_adapter_version(1)
    a.set_model_version(1)
    a.set_parameters(params)
    path = os.path.join(folder, name)
    a.export_adapter(path)
    return path


def main() -> None:
    folder = tempfile.mkdtemp()
    big = np.random.default_rng(1).random((4000, 4000), dtype=np.float32)
    rows = []
    for tensors in (50, 100):
        paths = [make(folder, f"a{tensors}_{k}.onnx_adapter", tensors, 420_000) for k in range(2)]
        for evict in (False, True):
            ms = []
            for i in range(60):
                if evict:
                    float((big * 1.0001).sum())  # 64 MB touched: the caches are cold, as after a model run
                t0 = time.perf_counter()
                adapter = ort.LoraAdapter()
                adapter.Load(paths[i % 2])
                ro = ort.RunOptions()
                ro.add_active_adapter(adapter)
                ms.append((time.perf_counter() - t0) * 1e3)
            rows.append({"tensors": tensors, "bytes": os.path.getsize(paths[0]), "caches": "cold" if evict else "hot",
                         "median_ms": statistics.median(ms)})
            print(rows[-1])
    record = {"command": "python " + " ".join(sys.argv), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.machine()} x{os.cpu_count()} cores (CPU-X)", "onnxruntime": ort.__version__,
              "rows": rows}
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
