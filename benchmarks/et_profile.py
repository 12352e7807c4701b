"""Where an ExecuTorch program spends its time: ETDump events summed per name.

    python -m benchmarks.et_profile BUNDLE --task movie_dialog --decode-steps 8 --out profile.json
    python -m benchmarks.et_profile BUNDLE --task rotten_tomatoes --runs 60 --out profile.json

A classification bundle's program runs `--runs` single-example calls on a full [1, max_length]
input (the shape is fixed, so the ids do not change the cost); `ms_per_decode_step` is then the
time per call.

Runs the bundle's program (a swappable backbone.pte with the task's adapter file, the task's
baked .pte, or its shared-mode .pte with backbone.ptd) as the LLM runner drives it: one prefill
of a `--prompt-tokens` prompt, then `--decode-steps` one-token calls through the KV cache, with
ExecuTorch's event tracer on. Prints and writes the top events: portable kernels
(`native_call_*`), XNNPACK's own operators (inside `DELEGATE_CALL`) and `Method::execute`, the
whole call; their share is of `Method::execute`. `ms_per_decode_step` leaves the prefill out;
`--threads N` sizes XNNPACK's threadpool (default: ExecuTorch's own, every core here).

The tracer adds its own cost to every call, so the same calls also run on an untraced load of the
program (before and after the traced run): `untraced_decode_ms_median` is the speed to quote, and
`tracer_overhead` (traced / untraced) says how far the event times are inflated.
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import provenance, write_results


def _program(bundle: Path, manifest: dict, task: str) -> tuple[Path, Path | None, Path | None]:
    """(the .pte, the adapter file or None, the backbone data file or None) of `task` in an
    ExecuTorch bundle."""
    entry = next((t for t in manifest["tasks"] if t["name"] == task), None)
    if entry is None:
        raise SystemExit(f"--task {task}: not in {bundle} (tasks: {', '.join(t['name'] for t in manifest['tasks'])})")
    if manifest["mode"] == "swappable":
        backbone = next(f for f in manifest["backbone"]["files"] if f["path"].endswith(".pte"))
        adapter = next(f for f in entry["files"] if f["role"] == "adapter")
        return bundle / backbone["path"], bundle / adapter["path"], None
    program = bundle / next(f for f in entry["files"] if f["path"].endswith(".pte"))["path"]
    if manifest["mode"] == "shared":  # the task's program reads every backbone weight from backbone.ptd
        data = next((f for f in manifest["backbone"]["files"] if f["path"].endswith(".ptd")), None)
        if data is None:
            raise SystemExit(f"{bundle}/manifest.json: a shared bundle without its backbone .ptd data file")
        return program, None, bundle / data["path"]
    return program, None, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path, help="a generative ExecuTorch bundle (calora-export --target executorch)")
    ap.add_argument("--task", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=40)
    ap.add_argument("--decode-steps", type=int, default=8)
    ap.add_argument("--runs", type=int, default=60, help="classification: timed single-example calls")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0,
                    help="XNNPACK threadpool size (0: ExecuTorch's default, every core here)")
    ap.add_argument("--by-operator", action="store_true",
                    help="sum XNNPACK's numbered operators by kind ('... GEMM #35' counts as '... GEMM'): "
                         "in one large partition each node gets its own number")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch
    import executorch.kernels.quantized  # noqa: F401  registers quantized_decomposed kernels
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    from calora.export.decoder import load_llm_kernels
    from calora.export.manifest import read_manifest
    from calora.targets.executorch import read_adapter

    load_llm_kernels()  # the programs' cache and attention kernels
    if args.threads:
        portable_lib._unsafe_reset_threadpool(args.threads)
    manifest = read_manifest(args.bundle)
    pte, adapter, data = _program(args.bundle, manifest, args.task)
    extra = read_adapter(adapter) if adapter is not None else []

    def load(traced: bool):
        return portable_lib._load_for_executorch(str(pte), data_path=str(data) if data else None,
                                                 enable_etdump=traced)

    if manifest.get("kind") == "generate":
        prompt = list(range(100, 100 + args.prompt_tokens))  # timing only: any in-vocabulary ids

        def session(module) -> tuple[float, list[float]]:
            def call(tokens: list[int], pos: int) -> float:
                t0 = time.perf_counter()
                module.forward([torch.tensor([tokens], dtype=torch.long), torch.tensor([pos], dtype=torch.long),
                                *extra])
                return time.perf_counter() - t0

            return call(prompt, 0), [call([prompt[-1]], args.prompt_tokens + i) for i in range(args.decode_steps)]
    else:  # classification: a first call (the "prefill" slot), then --runs timed ones
        length = next(i for i in manifest["inputs"] if i["name"] == "input_ids")["shape"][-1]
        row = [torch.arange(100, 100 + length, dtype=torch.long)[None], torch.ones(1, length, dtype=torch.long)]
        args.prompt_tokens, args.decode_steps = length, args.runs

        def session(module) -> tuple[float, list[float]]:
            def call_row() -> float:
                t0 = time.perf_counter()
                module.forward([*row, *extra])
                return time.perf_counter() - t0

            return call_row(), [call_row() for _ in range(args.runs)]

    # The tracer's own cost (1.05-1.16x per SmolLM2 decode step, 2026-12-07) and this machine's drift
    # (two profiles of the same programs 13 minutes apart disagreed by 1.3x) both distort traced times;
    # so the same calls also run on an untraced load of the program, before and after the traced one,
    # and the record keeps both.
    plain = load(traced=False)
    untraced = session(plain)[1]
    module = load(traced=True)
    prefill_s, decode_s = session(module)
    untraced += session(plain)[1]
    del plain
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "run.etdp"
        module.write_etdump_result_to_file(str(dump), str(Path(tmp) / "debug.bin"))
        inspector = Inspector(etdump_path=str(dump))
    calls = 1 + args.decode_steps
    total_ms, count, decode_ms = collections.Counter(), collections.Counter(), collections.Counter()
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            if event.perf_data is not None:
                raw = event.perf_data.raw
                name = re.sub(r" #\d+$", "", event.name) if args.by_operator else event.name
                total_ms[name] += sum(raw)
                count[name] += len(raw)
                if len(raw) == calls:  # one time per call: [0] is the prefill, the rest decode steps
                    decode_ms[name] += sum(raw[1:])
    whole = total_ms.get("Method::execute") or sum(total_ms.values())
    top = [{"event": name, "ms_total": round(ms, 2), "ms_per_call": round(ms / calls, 3),
            "ms_per_decode_step": round(decode_ms[name] / max(args.decode_steps, 1), 3),
            "share_of_execute": round(ms / whole, 4), "count": count[name]}
           for name, ms in total_ms.most_common(args.top)]
    record = {**provenance("benchmarks.et_profile", argv), "threads": args.threads or "default", "program": str(pte), "adapter": str(adapter or ""),
              "data": str(data or ""),
              "prompt_tokens": args.prompt_tokens, "decode_steps": args.decode_steps,
              "prefill_ms": round(prefill_s * 1e3, 1), "decode_ms_median": round(statistics.median(decode_s) * 1e3, 1),
              "untraced_decode_ms_median": round(statistics.median(untraced) * 1e3, 2),
              "tracer_overhead": round(statistics.median(decode_s) / statistics.median(untraced), 3),
              "events": top}
    write_results(args.out, record)
    if manifest.get("kind") == "generate":
        print(f"prefill {record['prefill_ms']} ms ({args.prompt_tokens} tokens), decode median "
              f"{record['decode_ms_median']} ms per token")
    else:  # the record keeps the generative keys: "prefill" is the first call, "decode" each later one
        print(f"first call {record['prefill_ms']} ms, then a median of {record['decode_ms_median']} ms per call "
              f"({args.runs} calls of [1, {args.prompt_tokens}] tokens; the ms/decode column is per call)")
    print(f"untraced (the same calls on a program loaded without the event tracer): a median of "
          f"{record['untraced_decode_ms_median']} ms per step; traced / untraced {record['tracer_overhead']}x")
    print(f"{'event':<48} {'ms/call':>9} {'ms/decode':>10} {'share':>7} {'count':>7}")
    for row in top:
        print(f"{row['event'][:48]:<48} {row['ms_per_call']:>9.2f} {row['ms_per_decode_step']:>10.3f} "
              f"{row['share_of_execute']:>7.1%} {row['count']:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
