"""Where calora's ONNX decode step loses time against the do-it-yourself graph: ONNX Runtime's raw
decode step (one token after 40 cached positions, `benchmarks.ort_profile`'s feeds) of several
graphs, each measured in a fresh process with N intra-op threads, interleaved over 3 rounds
(median of 60 steps per process after 10 warm-up steps; medians over rounds reported).

    python decode_step.py THREADS OUT.json LABEL=MODEL.ort [LABEL=MODEL.ort ...]

The variants measured on 2026-12-06 (how each was made is in this folder's README).
"""
import datetime
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]

if __name__ == "__main__" and sys.argv[1] == "--one":
    import time

    import onnxruntime as ort

    sys.path.insert(0, str(ROOT))
    from benchmarks.ort_profile import _decode_feeds

    model, threads = Path(sys.argv[2]), int(sys.argv[3])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    feeds = _decode_feeds(sess, 40, model)
    for _ in range(10):
        sess.run(None, feeds)
    times = []
    for _ in range(60):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    print("MS", statistics.median(times))
elif __name__ == "__main__":
    threads, out = sys.argv[1], Path(sys.argv[2])
    models = dict(a.split("=", 1) for a in sys.argv[3:])
    got = {k: [] for k in models}
    for _ in range(3):
        for label, path in models.items():
            done = subprocess.run([sys.executable, __file__, "--one", path, threads], capture_output=True, text=True,
                                  check=True)
            got[label].append(float(next(ln for ln in done.stdout.splitlines() if ln.startswith("MS "))[3:]))
    rows = [{"graph": k, "model": models[k], "ms_per_step": statistics.median(v), "rounds": v} for k, v in got.items()]
    out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "threads": int(threads),
                               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                               "machine": f"{platform.machine()} x{__import__('os').cpu_count()} cores",
                               "rows": rows}, indent=1) + "\n")
    for r in rows:
        print(f"{r['ms_per_step']:7.2f} ms  {r['graph']}")
