# Probe run by hand from the repository root, 2026-12-07 16:41 UTC, CPU-X, `python switch_steady_probe.py MODE` for
# MODE in baked shared baked shared, one after the other: 20 task switches (rotten_tomatoes <-> sms_spam) of
# the two-task bundles, one steady run timed after each, then 60 runs of the last task. Output: switch_steady_probe.txt.
import time, statistics, sys, resource
import torch
import executorch.kernels.quantized  # noqa
from executorch.runtime import Runtime
rt = Runtime.get()
B = "bench_runs/et-ffn-both/bundles"
ids = torch.randint(1000, 2000, (1, 64)); mask = torch.ones(1, 64, dtype=torch.long)
mode = sys.argv[1]
ptd = f"{B}/et-{mode}/executorch/backbone.ptd" if mode.startswith("shared") else None
paths = [f"{B}/et-{mode}/executorch/{t}.pte" for t in ("rotten_tomatoes", "sms_spam")]
p = rt.load_program(paths[0], data_path=ptd); m = p.load_method("forward")
steady, afterloads = [], []
for i in range(20):
    np_ = rt.load_program(paths[(i + 1) % 2], data_path=ptd); nm = np_.load_method("forward")
    p, m = np_, nm; del np_, nm
    m.execute([ids, mask])
    t0 = time.perf_counter(); m.execute([ids, mask]); steady.append((time.perf_counter() - t0) * 1e3)
ts = []
for i in range(60):
    t0 = time.perf_counter(); m.execute([ids, mask]); ts.append((time.perf_counter() - t0) * 1e3)
print(mode, "steady after each switch", round(statistics.median(steady), 2), "then 60 runs median", round(statistics.median(ts), 2),
      "maxrss MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, flush=True)
