"""ms per decode step of ExecuTorch programs with the forward(tokens, input_pos) contract, fed one
token at a time (so static one-token programs and dynamic ones are timed the same way): 40 tokens
fill the cache, then the median of 32 one-token steps; each program in a fresh process at N
threads, 3 interleaved rounds, medians.

    python decode_only_time.py THREADS OUT.json LABEL=PROGRAM.pte [LABEL=PROGRAM.pte ...]
"""
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]

if __name__ == "__main__" and sys.argv[1] == "--one":
    sys.path.insert(0, str(ROOT))
    from executorch.extension.pybindings import portable_lib

    from calora.targets.executorch_llm_runtime import PteSession

    threads = int(sys.argv[3])
    if threads:
        portable_lib._unsafe_reset_threadpool(threads)
    session = PteSession(Path(sys.argv[2]))
    for pos in range(40):
        session._run([100 + pos], pos, [])
    steps = []
    for pos in range(40, 72):
        t0 = time.perf_counter()
        session._run([5], pos, [])
        steps.append((time.perf_counter() - t0) * 1e3)
    print("MS", statistics.median(steps))
elif __name__ == "__main__":
    threads, out = sys.argv[1], Path(sys.argv[2])
    programs = dict(a.split("=", 1) for a in sys.argv[3:])
    got = {k: [] for k in programs}
    for _ in range(3):
        for label, path in programs.items():
            done = subprocess.run([sys.executable, __file__, "--one", path, threads], capture_output=True, text=True,
                                  check=True)
            got[label].append(float(next(ln for ln in done.stdout.splitlines() if ln.startswith("MS "))[3:]))
    rows = [{"program": k, "pte": programs[k], "ms_per_step": statistics.median(v), "rounds": v} for k, v in got.items()]
    out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "threads": int(threads),
                               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                               "machine": f"{platform.machine()} x{__import__('os').cpu_count()} cores",
                               "rows": rows}, indent=1) + "\n")
    for r in rows:
        print(f"{r['ms_per_step']:7.2f} ms  {r['program']}")
