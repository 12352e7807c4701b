"""What opening a task costs in each ExecuTorch layout of a generative bundle, batch 1.

For each bundle (``--bundles``: baked, swappable, shared exports of the same task), interleaved
round by round, with the ExecuTorch runtime's own API (what an app calls), the file cache warm:

- baked: ``load_program(<task>.pte)`` + ``load_method("forward")`` (XNNPACK packs every weight);
- shared: the same with ``backbone.ptd`` as the program's data file (ExecuTorch's program-data
  separation: one weights file on the device, a small program per task);
- swappable: the backbone program opened once (``open``), and a task switch as the app makes it:
  the adapter file read and widened to the float32 tensors ``forward`` takes (``switch``);

then the first call after opening (a prefill of ``--prompt-tokens`` tokens) against a steady one.
Medians over rounds.

    python -m benchmarks.gen_load --bundles B1 B2 ... --task T --out results.json
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

from benchmarks.common import provenance, write_results


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def _measure(bundle: Path, manifest: dict, task: str, tokens: list[int]) -> dict[str, float]:
    """One round for one bundle: open (and, swappable, switch) times, first and steady call."""
    import torch
    from calora.export.decoder import load_llm_kernels
    from calora.targets.base import manifest_file
    from calora.targets.executorch import _load, read_adapter, shared_data

    load_llm_kernels()  # registered once per process, before any timing (the programs' cache kernels)
    mode = manifest["mode"]
    ids, pos = torch.tensor([tokens], dtype=torch.long), torch.tensor([0], dtype=torch.long)
    out: dict[str, float] = {}
    gc.collect()
    if mode == "swappable":
        t0 = time.perf_counter()
        program, method = _load(manifest_file(bundle, manifest, "backbone", None, ".pte"))
        out["open_ms"] = _ms(t0)
        t0 = time.perf_counter()
        extra = read_adapter(manifest_file(bundle, manifest, "adapter", task, ".safetensors"))
        out["switch_ms"] = _ms(t0)
    else:
        pte, data = manifest_file(bundle, manifest, "model", task, ".pte"), shared_data(bundle, manifest)
        t0 = time.perf_counter()
        program, method = _load(pte, data)
        out["open_ms"] = out["switch_ms"] = _ms(t0)  # switching to a task means opening its program
        extra = []
    for key in ("first_call_ms", "steady_call_ms"):
        t0 = time.perf_counter()
        method.execute([ids, pos, *extra])
        out[key] = _ms(t0)
    del method, program
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", nargs="+", required=True, type=Path, help="ExecuTorch generative bundles")
    ap.add_argument("--task", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from calora.export.manifest import read_manifest

    manifests = {b: read_manifest(b) for b in args.bundles}
    for b, m in manifests.items():
        if m["target"] != "executorch" or m.get("kind") != "generate":
            raise SystemExit(f"--bundles {b}: an ExecuTorch generative bundle is needed, this is {m['target']} "
                             f"{m.get('kind')}")
    tokens = [(7 * i + 3) % 1000 + 10 for i in range(args.prompt_tokens)]  # fixed ids: load cost, not content
    samples: dict[Path, list[dict]] = {b: [] for b in args.bundles}
    for _ in range(args.rounds):
        for b in args.bundles:  # interleaved: each round opens every bundle once
            samples[b].append(_measure(b, manifests[b], args.task, tokens))
    rows = []
    for b in args.bundles:
        m = manifests[b]
        entry = next(t for t in m["tasks"] if t["name"] == args.task)
        shipped = sum(int(f["bytes"]) for f in [*m["backbone"]["files"], *entry["files"]])
        task_only = sum(int(f["bytes"]) for f in entry["files"])
        rows.append({"bundle": str(b), "mode": m["mode"], "bytes_for_task": shipped, "bytes_task_only": task_only,
                     **{k: statistics.median(s[k] for s in samples[b]) for k in samples[b][0]},
                     "rounds": len(samples[b])})
    write_results(args.out, {**provenance("benchmarks.gen_load", argv), "task": args.task,
                             "prompt_tokens": args.prompt_tokens, "rows": rows})
    print(f"{'mode':<10} {'open ms':>9} {'switch ms':>10} {'first call ms':>14} {'steady ms':>10} "
          f"{'task MB':>8} {'all MB':>7}")
    for r in rows:
        print(f"{r['mode']:<10} {r['open_ms']:>9.1f} {r['switch_ms']:>10.2f} {r['first_call_ms']:>14.1f} "
              f"{r['steady_call_ms']:>10.1f} {r['bytes_task_only'] / 1e6:>8.2f} {r['bytes_for_task'] / 1e6:>7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
