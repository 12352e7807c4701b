"""How many threads each runtime decodes with when left to its default: SmolLM2 decode time per
token at the runtime's default, 1 and 2 intra-op threads, each measurement in a fresh process
(so no other runtime's thread pool shares it), the configurations interleaved over 3 rounds.

    python docs/results/2026-12-06/threads/thread_defaults.py OG_FOLDER ET_PTE OUT.json

OG_FOLDER: an onnxruntime-genai folder (genai_config.json); ET_PTE: an ExecuTorch program with
the forward(tokens, input_pos) contract. One 40-token prompt, 17 new tokens, median step of 7
generations per process; the medians over rounds are reported.
"""
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]


def one(kind: str, path: str, threads: int) -> float:
    sys.path.insert(0, str(ROOT))
    if kind == "og":
        from calora.targets.onnx_genai_runtime import GenaiSession

        GenaiSession.intra_op_threads = threads or None
        session = GenaiSession(Path(path))
        run = lambda p: session.generate(p, 17, eos=-1)  # noqa: E731
    else:
        if threads:
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(threads)
        from calora.targets.executorch_llm_runtime import PteSession

        session = PteSession(Path(path))
        run = lambda p: session.generate(p, 17, -1, [])  # noqa: E731
    prompt = list(range(1000, 1040))
    return statistics.median(statistics.median(run(prompt).decode_s) * 1e3 for _ in range(7))


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        print("MS", one(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        raise SystemExit(0)
    og, et, out = sys.argv[1:4]
    configs = [(k, p, t) for k, p in (("og", og), ("et", et)) for t in (0, 1, 2)]
    times = {c: [] for c in configs}
    for _ in range(3):
        for c in configs:
            done = subprocess.run([sys.executable, __file__, "--one", *map(str, c)], capture_output=True, text=True,
                                  check=True)
            times[c].append(float(next(ln for ln in done.stdout.splitlines() if ln.startswith("MS "))[3:]))
    import datetime
    import platform

    rows = [{"runtime": {"og": "onnxruntime-genai", "et": "ExecuTorch (XNNPACK)"}[k], "model": p,
             "threads": t or "default", "ms_per_token": statistics.median(times[(k, p, t)]),
             "rounds": times[(k, p, t)]} for k, p, t in configs]
    Path(out).write_text(json.dumps({
        "command": "python " + " ".join(sys.argv), "date": datetime.datetime.now(datetime.timezone.utc)
        .strftime("%Y-%m-%d %H:%M UTC"), "machine": f"{platform.machine()} x{__import__('os').cpu_count()} cores",
        "rows": rows}, indent=1) + "\n")
    for r in rows:
        print(f"{r['runtime']:<22} {str(r['threads']):>8} {r['ms_per_token']:7.2f} ms/token  {r['model']}")
