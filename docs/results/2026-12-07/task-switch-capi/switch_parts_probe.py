"""Where ONNX Runtime's 0.28 ms task switch from the file goes, through its C API (what an app
calls): each part of `_ort_c_worker`'s timed switch on its own, per switch, with one model run
between switches (as in benchmarks.task_switch, so caches are as cold as after real work) and
without (hot):

- `CreateLoraAdapter(path)`: the file memory-mapped, its flatbuffer validated, one OrtValue per tensor;
- `CreateRunOptions` + `RunOptionsAddActiveLoraAdapter`;
- `ReleaseRunOptions` + `ReleaseLoraAdapter` of the previous task (munmap).

Also `CreateLoraAdapterFromArray` over bytes already in memory (the file read once beforehand), the
number of tensors in the adapter file, and a synthetic single-tensor adapter of the same bytes.

    PYTHONPATH=. python docs/results/2026-12-07/task-switch-capi/switch_parts_probe.py bench_runs/ts61/bundles/onnx-swappable \\
        docs/results/2026-12-07/task-switch-capi/switch_parts_probe.json
"""

import ctypes as C
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def main() -> None:
    import onnxruntime as ort

    from benchmarks.ort_capi import _P, OrtC
    from calora.export.manifest import read_manifest
    from calora.targets.base import manifest_file

    bundle, out = Path(sys.argv[1]), Path(sys.argv[2])
    manifest = read_manifest(bundle)
    tasks = [t["name"] for t in manifest["tasks"]][:2]
    api = OrtC()
    sess = api.session(manifest_file(bundle, manifest, "backbone", None, ".ort"))
    paths = [manifest_file(bundle, manifest, "adapter", t, ".onnx_adapter") for t in tasks]
    feed = {"input_ids": np.full((1, 64), 7, np.int64), "attention_mask": np.ones((1, 64), np.int64)}
    x = api.inputs(feed)
    n_tensors = len(ort.AdapterFormat.read_adapter(str(paths[0])).get_parameters())
    # one tensor holding the same number of bytes (float16), written with ONNX Runtime's own writer
    nbytes = paths[0].stat().st_size
    one = ort.AdapterFormat()
    one.set_parameters({"w": ort.OrtValue.ortvalue_from_numpy(np.zeros(nbytes // 2, np.float16))})
    single = Path(tempfile.mkdtemp()) / "single.onnx_adapter"
    one.export_adapter(str(single))
    from_array = api._fn("CreateLoraAdapterFromArray", _P, C.c_char_p, C.c_size_t, _P, C.POINTER(_P))
    blobs = [p.read_bytes() for p in paths]

    def ms(t0: float) -> float:
        return (time.perf_counter() - t0) * 1e3

    rows: dict[str, dict[str, list[float]]] = {}
    for cold in (True, False):
        parts: dict[str, list[float]] = {k: [] for k in ("create_adapter", "run_options_add_active", "release_previous",
                                                          "create_adapter_from_array", "create_single_tensor_adapter")}
        prev = None
        for r in range(5):
            for i in range(20):
                j = (i + 1) % 2
                if cold:
                    api.run(sess, x, "logits", (1, 2), api.run_options(prev[0]) if prev else None)
                t0 = time.perf_counter()
                a = api.adapter(paths[j])
                parts["create_adapter"].append(ms(t0))
                t0 = time.perf_counter()
                ro = api.run_options(a)
                parts["run_options_add_active"].append(ms(t0))
                t0 = time.perf_counter()
                if prev is not None:
                    api.release_run_options(prev[1])
                    api.release_adapter(prev[0])
                parts["release_previous"].append(ms(t0))
                prev = (a, ro)
                if cold:
                    api.run(sess, x, "logits", (1, 2), ro)
                h = _P()
                t0 = time.perf_counter()
                api._ok(from_array(blobs[j], len(blobs[j]), None, C.byref(h)))
                parts["create_adapter_from_array"].append(ms(t0))
                api.release_adapter(h.value)
                if cold:
                    api.run(sess, x, "logits", (1, 2), ro)
                t0 = time.perf_counter()
                s = api.adapter(single)
                parts["create_single_tensor_adapter"].append(ms(t0))
                api.release_adapter(s)
        rows["after a model run (cold caches)" if cold else "back to back (hot caches)"] = {
            k: statistics.median(v) for k, v in parts.items()}
    record = {"command": "python " + " ".join(sys.argv), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": "CPU-X, 2 cores", "onnxruntime": api.version, "adapter_file_bytes": nbytes,
              "adapter_tensors": n_tensors, "switches": 100, "medians_ms": rows}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
