"""What the LoRA and recovery branches cost an ExecuTorch decode step: calora's dense baked program
against the same task exported with every branch removed (`bare_backbone_executorch.py`) and with
its branches grouped by shared input (`grouped_branches_executorch.py`), at 1 and 2 XNNPACK
threads, each measurement in a fresh process (`thread_defaults.py --one et`), 3 interleaved
rounds, medians.

    python et_branch_cost.py OUT.json LABEL=PROGRAM.pte [LABEL=PROGRAM.pte ...]
"""
import datetime
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
out = sys.argv[1]
configs = [(label, p, t) for label, p in (a.split("=", 1) for a in sys.argv[2:]) for t in (1, 2)]
got = {c: [] for c in configs}
for _ in range(3):
    for c in configs:
        done = subprocess.run([sys.executable, str(HERE / "thread_defaults.py"), "--one", "et", c[1], str(c[2])],
                              capture_output=True, text=True, check=True)
        got[c].append(float(next(ln for ln in done.stdout.splitlines() if ln.startswith("MS "))[3:]))
rows = [{"program": c[0], "pte": c[1], "threads": c[2], "ms_per_token": statistics.median(v), "rounds": v}
        for c, v in got.items()]
Path(out).write_text(json.dumps({"command": "python " + " ".join(sys.argv),
                                 "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                                 "machine": f"{platform.machine()} x{__import__('os').cpu_count()} cores",
                                 "rows": rows}, indent=1) + "\n")
for r in rows:
    print(f"{r['ms_per_token']:6.2f} ms  {r['threads']} thread(s)  {r['program']}")
