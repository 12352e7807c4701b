"""What switching tasks costs: a swappable bundle's adapter switch against loading the other
task's whole baked model, per runtime (ONNX Runtime, ExecuTorch), batch 1.

For a pair of bundles of the same tasks (``--swappable`` and ``--baked``, same target) each worker
process (one per bundle and round, interleaved) alternates between the first two tasks
``--switches`` times and times, with the runtime's own API (what an app calls):

- swappable, ``switch_cold``: the other task's adapter file read from disk and made active
  (ONNX Runtime: ``LoraAdapter.Load`` + ``RunOptions.add_active_adapter``; ExecuTorch: the
  ``.safetensors`` read into the tensors the method takes);
- swappable, ``switch_warm``: every adapter already in memory, the other one made active;
- baked, ``reload``: the other task's model opened (ONNX Runtime ``InferenceSession``; ExecuTorch
  ``load_program`` + ``load_method``), the previous one dropped;
- both: the first run after the switch and a steady-state run (the same task again).

Medians over switches, then over rounds. The goal of issue 11: a swappable switch at least 100x
faster than loading the other task's model.

    python -m benchmarks.task_switch --swappable bundles/onnx-swappable --baked bundles/onnx-baked \\
        --swappable bundles/executorch-swappable --baked bundles/executorch-baked \\
        --runs calora_runs --out benchmarks/results/task_switch.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import provenance, write_results


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def _rows(manifest: dict, runs: Path, length: int) -> tuple[np.ndarray, np.ndarray]:
    """One real test text of the first task, padded to `length` tokens (batch 1)."""
    from calora.train.artifacts import read_json
    from calora.train.backbones import load_tokenizer
    from calora.validate.references import encode, eval_data

    task = manifest["tasks"][0]["name"]
    cfg = read_json(runs / task / "calora" / "calora_config.json")
    data = eval_data(task, cfg, None, None)
    ids, mask = encode(load_tokenizer(cfg["backbone"]["source"]), list(data.texts[:1]), length)
    return ids, mask


# ---- ONNX Runtime ----------------------------------------------------------------------------------
def _ort_worker(bundle: Path, manifest: dict, tasks: list[str], feed: dict, switches: int) -> dict:
    import onnxruntime as ort

    from calora.targets.base import manifest_file

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    run = lambda sess, ro=None: sess.run(["logits"], feed, run_options=ro)  # noqa: E731
    out: dict[str, list[float]] = {"switch_cold": [], "switch_warm": [], "first_run": [], "steady_run": [],
                                   "reload": []}
    if manifest["mode"] == "swappable":
        sess = ort.InferenceSession(str(manifest_file(bundle, manifest, "backbone", None, ".ort")), opts,
                                    providers=["CPUExecutionProvider"])
        paths = [str(manifest_file(bundle, manifest, "adapter", t, ".onnx_adapter")) for t in tasks]
        loaded = []
        for p in paths:
            a = ort.LoraAdapter()
            a.Load(p)
            loaded.append(a)
        ro = ort.RunOptions()
        ro.add_active_adapter(loaded[0])
        for _ in range(3):
            run(sess, ro)
        for i in range(switches):
            j = (i + 1) % len(tasks)
            t0 = time.perf_counter()
            adapter = ort.LoraAdapter()
            adapter.Load(paths[j])
            ro = ort.RunOptions()
            ro.add_active_adapter(adapter)
            out["switch_cold"].append(_ms(t0))
            t0 = time.perf_counter()
            run(sess, ro)
            out["first_run"].append(_ms(t0))
            t0 = time.perf_counter()
            run(sess, ro)
            out["steady_run"].append(_ms(t0))
            t0 = time.perf_counter()
            warm = ort.RunOptions()
            warm.add_active_adapter(loaded[(j + 1) % len(tasks)])
            out["switch_warm"].append(_ms(t0))
    else:
        paths = [str(manifest_file(bundle, manifest, "model", t, ".ort")) for t in tasks]
        sess = ort.InferenceSession(paths[0], opts, providers=["CPUExecutionProvider"])
        for _ in range(3):
            run(sess)
        for i in range(switches):
            j = (i + 1) % len(tasks)
            t0 = time.perf_counter()
            del sess
            sess = ort.InferenceSession(paths[j], opts, providers=["CPUExecutionProvider"])
            out["reload"].append(_ms(t0))
            t0 = time.perf_counter()
            run(sess)
            out["first_run"].append(_ms(t0))
            t0 = time.perf_counter()
            run(sess)
            out["steady_run"].append(_ms(t0))
    return out


# ---- ExecuTorch ------------------------------------------------------------------------------------
def _et_worker(bundle: Path, manifest: dict, tasks: list[str], ids, mask, switches: int) -> dict:
    import executorch.kernels.quantized  # noqa: F401  (the int8/int4 embedding kernels)
    import torch
    from executorch.runtime import Runtime

    from calora.targets.base import manifest_file
    from calora.targets.executorch import read_adapter

    rt = Runtime.get()
    x = [torch.as_tensor(ids), torch.as_tensor(mask)]
    out: dict[str, list[float]] = {"switch_cold": [], "switch_warm": [], "first_run": [], "steady_run": [],
                                   "reload": []}
    if manifest["mode"] == "swappable":
        method = rt.load_program(str(manifest_file(bundle, manifest, "backbone", None, ".pte"))).load_method("forward")
        paths = [manifest_file(bundle, manifest, "adapter", t, ".safetensors") for t in tasks]
        loaded = [read_adapter(p) for p in paths]
        for _ in range(3):
            method.execute([*x, *loaded[0]])
        for i in range(switches):
            j = (i + 1) % len(tasks)
            t0 = time.perf_counter()
            tensors = read_adapter(paths[j])
            out["switch_cold"].append(_ms(t0))
            t0 = time.perf_counter()
            method.execute([*x, *tensors])
            out["first_run"].append(_ms(t0))
            t0 = time.perf_counter()
            method.execute([*x, *tensors])
            out["steady_run"].append(_ms(t0))
            t0 = time.perf_counter()
            args = [*x, *loaded[(j + 1) % len(tasks)]]  # the switch itself: other inputs on the next call
            out["switch_warm"].append(_ms(t0))
            del args
    else:
        paths = [str(manifest_file(bundle, manifest, "model", t, ".pte")) for t in tasks]
        program = rt.load_program(paths[0])
        method = program.load_method("forward")
        for _ in range(3):
            method.execute(x)
        for i in range(switches):
            j = (i + 1) % len(tasks)
            t0 = time.perf_counter()
            del method, program
            program = rt.load_program(paths[j])
            method = program.load_method("forward")
            out["reload"].append(_ms(t0))
            t0 = time.perf_counter()
            method.execute(x)
            out["first_run"].append(_ms(t0))
            t0 = time.perf_counter()
            method.execute(x)
            out["steady_run"].append(_ms(t0))
    return out


def worker(args) -> int:
    from calora.export.manifest import read_manifest

    bundle = Path(args.path)
    manifest = read_manifest(bundle)
    tasks = [t["name"] for t in manifest["tasks"]][:2]
    data = np.load(args.inputs)
    ids, mask = data["ids"], data["mask"]
    if manifest["target"] == "onnx":
        res = _ort_worker(bundle, manifest, tasks, {"input_ids": ids, "attention_mask": mask}, args.switches)
    elif manifest["target"] == "executorch":
        res = _et_worker(bundle, manifest, tasks, ids, mask, args.switches)
    else:
        raise SystemExit(f"{bundle}: target {manifest['target']} is not timed here (Core ML needs Apple hardware)")
    print("RESULT " + json.dumps({k: statistics.median(v) for k, v in res.items() if v}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--swappable", type=Path, action="append", default=[], help="a swappable bundle (2+ tasks)")
    ap.add_argument("--baked", type=Path, action="append", default=[], help="the baked bundle of the same tasks")
    ap.add_argument("--runs", type=Path, default=Path("calora_runs"))
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--switches", type=int, default=20, help="task switches timed per process")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("benchmarks/.work"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    from calora.export.manifest import read_manifest

    if len(args.swappable) != len(args.baked) or not args.swappable:
        raise SystemExit("give --swappable and --baked in pairs (same target, same tasks)")
    pairs = []
    for s, b in zip(args.swappable, args.baked):
        ms, mb = read_manifest(s), read_manifest(b)
        if ms["target"] != mb["target"] or ms["mode"] != "swappable" or mb["mode"] != "baked":
            raise SystemExit(f"{s} / {b}: need a swappable and a baked bundle of one target")
        if len(ms["tasks"]) < 2 or [t["name"] for t in ms["tasks"]][:2] != [t["name"] for t in mb["tasks"]][:2]:
            raise SystemExit(f"{s} / {b}: both need the same first two tasks")
        pairs.append((ms["target"], s, b, ms))
    args.work.mkdir(parents=True, exist_ok=True)
    inputs = args.work / "task_switch_row.npz"
    ids, mask = _rows(pairs[0][3], args.runs, args.length)
    np.savez(inputs, ids=ids, mask=mask)
    results: dict[str, list[dict]] = {str(p): [] for _, s, b, _ in pairs for p in (s, b)}
    for r in range(args.rounds):
        for _, s, b, _ in pairs:
            for path in (s, b):
                cmd = [sys.executable, "-m", "benchmarks.task_switch", "--worker", "--path", str(path), "--inputs",
                       str(inputs), "--switches", str(args.switches)]
                done = subprocess.run(cmd, capture_output=True, text=True,
                                      env={**os.environ, "PYTHONWARNINGS": "ignore"})
                line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if done.returncode or line is None:
                    raise SystemExit(f"{path} failed:\n{done.stderr[-3000:]}")
                results[str(path)].append(json.loads(line[len("RESULT "):]))
                print(f"round {r + 1}/{args.rounds} {path}: {line[len('RESULT '):]}", flush=True)

    def med(path: Path, key: str) -> float:
        return statistics.median(x[key] for x in results[str(path)])

    rows = []
    for target, s, b, m in pairs:
        cold, warm, reload = med(s, "switch_cold"), med(s, "switch_warm"), med(b, "reload")
        rows.append({
            "target": target, "swappable": str(s), "baked": str(b), "tasks": [t["name"] for t in m["tasks"]][:2],
            "adapter_bytes": next(f["bytes"] for f in m["tasks"][1]["files"] if f["role"] == "adapter"),
            "adapter_dtype": m.get("adapter_dtype", "float32"),
            "switch_cold_ms": cold, "switch_warm_ms": warm, "reload_ms": reload,
            "swappable_first_run_ms": med(s, "first_run"), "swappable_steady_run_ms": med(s, "steady_run"),
            "baked_first_run_ms": med(b, "first_run"), "baked_steady_run_ms": med(b, "steady_run"),
            "x_reload_over_switch_cold": reload / cold,
            "x_reload_over_switch_warm": reload / warm if warm > 0 else None,
            "x_switch_plus_first_run": (reload + med(b, "first_run")) / (cold + med(s, "first_run")),
            "rounds": {k: results[str(p)] for k, p in (("swappable", s), ("baked", b))},
        })
    record = {**provenance("benchmarks.task_switch", argv), "length": args.length, "batch": 1, "switches_per_process": args.switches, "rounds": args.rounds,
              "rows": rows}
    print(f"\n{'target':<11} {'switch cold':>11} {'switch warm':>11} {'reload':>9} {'reload/cold':>11} "
          f"{'(reload+run)/(switch+run)':>26}")
    for row in rows:
        print(f"{row['target']:<11} {row['switch_cold_ms']:9.3f}ms {row['switch_warm_ms']:9.4f}ms "
              f"{row['reload_ms']:7.2f}ms {row['x_reload_over_switch_cold']:11.1f} {row['x_switch_plus_first_run']:26.2f}")
    write_results(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
