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
- shared (ExecuTorch, ``--shared``, optional): as baked, the other task's program opened with the
  bundle's ``backbone.ptd`` as its data file (``load_program(pte, data_path=ptd)``);
- both: the first run after the switch and a steady-state run (the same task again).

A switch or reload is timed in two parts: opening the other task (``switch_open``, ``reload_open``)
and freeing the previous one (``release``). ``switch_cold`` and ``reload`` are their sum, as an app
that frees the old task first pays; an app can also free it after the first run of the new one,
off the latency path, so the ratio of the opening parts alone is reported too.

ONNX Runtime is timed through two APIs (``--onnx-api``, default both): its Python API, and its C API
(ctypes over the wheel's ``libonnxruntime.so``, ``benchmarks/ort_capi.py``), which is what an app's
native code, the C++ ``Ort::LoraAdapter`` and Java's ``OrtLoraAdapter`` call. They differ where it
matters here: Python's ``LoraAdapter.Load`` copies the file into memory, the C API's
``CreateLoraAdapter`` memory-maps it (pages are then read by the first run, which is timed too).

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


#: Per-switch timings each worker returns (ms). `switch_cold` / `reload` = open the other task
#: (`*_open`) + free the previous one (`release`, which an app can also do after the first run).
_KEYS = ("switch_cold", "switch_open", "switch_warm", "reload", "reload_open", "release", "first_run", "steady_run")


def _split(out: dict, what: str, t0: float, t1: float) -> None:
    """Record a switch or reload timed as [t0, t1) opening the other task, [t1, now) freeing the
    previous one."""
    now = time.perf_counter()
    out["switch_cold" if what == "switch" else "reload"].append((now - t0) * 1e3)
    out[f"{what}_open"].append((t1 - t0) * 1e3)
    out["release"].append((now - t1) * 1e3)


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
    out: dict[str, list[float]] = {k: [] for k in _KEYS}
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
        held: list = []  # the active task's adapter and run options (the run options use the adapter)
        for i in range(switches):
            j = (i + 1) % len(tasks)
            t0 = time.perf_counter()
            new_adapter = ort.LoraAdapter()
            new_adapter.Load(paths[j])
            new_ro = ort.RunOptions()
            new_ro.add_active_adapter(new_adapter)
            t1 = time.perf_counter()
            held[:] = (new_adapter, new_ro)  # the previous task's adapter and run options freed
            ro = new_ro
            del new_adapter, new_ro
            _split(out, "switch", t0, t1)
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
            new = ort.InferenceSession(paths[j], opts, providers=["CPUExecutionProvider"])
            t1 = time.perf_counter()
            sess = new  # the previous task's session freed
            del new
            _split(out, "reload", t0, t1)
            t0 = time.perf_counter()
            run(sess)
            out["first_run"].append(_ms(t0))
            t0 = time.perf_counter()
            run(sess)
            out["steady_run"].append(_ms(t0))
    return out


def _ort_c_worker(bundle: Path, manifest: dict, tasks: list[str], feed: dict, switches: int) -> dict:
    """`_ort_worker` through ONNX Runtime's C API (what an app calls): `CreateSession`,
    `CreateLoraAdapter` (memory-mapped) + `CreateRunOptions` + `RunOptionsAddActiveLoraAdapter`; a
    switch also releases the previous task's adapter and run options, as an app would."""
    from benchmarks.ort_capi import OrtC
    from calora.targets.base import manifest_file

    api = OrtC()
    x = api.inputs(feed)
    shape = {t["name"]: (1, len(t["label_names"])) for t in manifest["tasks"]}
    out: dict[str, list[float]] = {k: [] for k in _KEYS}
    if manifest["mode"] == "swappable":
        sess = api.session(manifest_file(bundle, manifest, "backbone", None, ".ort"))
        paths = [manifest_file(bundle, manifest, "adapter", t, ".onnx_adapter") for t in tasks]
        loaded = [api.adapter(p) for p in paths]
        ro = api.run_options(loaded[0])
        for _ in range(3):
            api.run(sess, x, "logits", shape[tasks[0]], ro)
        api.release_run_options(ro)
        current = None
        for i in range(switches):
            j = (i + 1) % len(tasks)
            t0 = time.perf_counter()
            adapter = api.adapter(paths[j])
            ro = api.run_options(adapter)
            t1 = time.perf_counter()
            if current is not None:
                api.release_run_options(current[1])
                api.release_adapter(current[0])
            _split(out, "switch", t0, t1)
            current = (adapter, ro)
            t0 = time.perf_counter()
            api.run(sess, x, "logits", shape[tasks[j]], ro)
            out["first_run"].append(_ms(t0))
            t0 = time.perf_counter()
            api.run(sess, x, "logits", shape[tasks[j]], ro)
            out["steady_run"].append(_ms(t0))
            t0 = time.perf_counter()
            warm = api.run_options(loaded[(j + 1) % len(tasks)])
            out["switch_warm"].append(_ms(t0))
            api.release_run_options(warm)
    else:
        paths = [manifest_file(bundle, manifest, "model", t, ".ort") for t in tasks]
        sess = api.session(paths[0])
        for _ in range(3):
            api.run(sess, x, "logits", shape[tasks[0]])
        for i in range(switches):
            j = (i + 1) % len(tasks)
            t0 = time.perf_counter()
            new = api.session(paths[j])
            t1 = time.perf_counter()
            api.release_session(sess)
            sess = new
            _split(out, "reload", t0, t1)
            t0 = time.perf_counter()
            api.run(sess, x, "logits", shape[tasks[j]])
            out["first_run"].append(_ms(t0))
            t0 = time.perf_counter()
            api.run(sess, x, "logits", shape[tasks[j]])
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
    out: dict[str, list[float]] = {k: [] for k in _KEYS}
    if manifest["mode"] == "swappable":
        method = rt.load_program(str(manifest_file(bundle, manifest, "backbone", None, ".pte"))).load_method("forward")
        paths = [manifest_file(bundle, manifest, "adapter", t, ".safetensors") for t in tasks]
        loaded = [read_adapter(p) for p in paths]
        for _ in range(3):
            method.execute([*x, *loaded[0]])
        for i in range(switches):
            j = (i + 1) % len(tasks)
            t0 = time.perf_counter()
            new = read_adapter(paths[j])
            t1 = time.perf_counter()
            tensors = new  # the previous task's tensors freed
            del new
            _split(out, "switch", t0, t1)
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
    else:  # baked, or shared: each task's program, opened with backbone.ptd as its data file
        from calora.targets.executorch import shared_data

        data = shared_data(bundle, manifest)
        load = lambda path: rt.load_program(path, data_path=None if data is None else str(data))  # noqa: E731
        paths = [str(manifest_file(bundle, manifest, "model", t, ".pte")) for t in tasks]
        program = load(paths[0])
        method = program.load_method("forward")
        for _ in range(3):
            method.execute(x)
        for i in range(switches):
            j = (i + 1) % len(tasks)
            t0 = time.perf_counter()
            new_program = load(paths[j])
            new_method = new_program.load_method("forward")
            t1 = time.perf_counter()
            program, method = new_program, new_method  # the previous task's program freed
            del new_program, new_method
            _split(out, "reload", t0, t1)
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
        work = _ort_c_worker if args.api == "c" else _ort_worker
        res = work(bundle, manifest, tasks, {"input_ids": ids, "attention_mask": mask}, args.switches)
    elif manifest["target"] == "executorch":
        res = _et_worker(bundle, manifest, tasks, ids, mask, args.switches)
    else:
        raise SystemExit(f"{bundle}: target {manifest['target']} is not timed here (Core ML needs Apple hardware)")
    res["first_run_excess"] = [f - s for f, s in zip(res["first_run"], res["steady_run"])]
    print("RESULT " + json.dumps({k: statistics.median(v) for k, v in res.items() if v}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--api", choices=("python", "c"), default="python", help=argparse.SUPPRESS)
    ap.add_argument("--onnx-api", choices=("python", "c", "both"), default="both",
                    help="ONNX Runtime API timed: its Python API, its C API (what an app's native code calls; "
                         "the adapter file memory-mapped), or both, side by side (default)")
    ap.add_argument("--swappable", type=Path, action="append", default=[], help="a swappable bundle (2+ tasks)")
    ap.add_argument("--baked", type=Path, action="append", default=[], help="the baked bundle of the same tasks")
    ap.add_argument("--shared", type=Path, action="append", default=[],
                    help="an ExecuTorch --mode shared bundle of the same tasks, one per ExecuTorch pair, in order: "
                         "timed as a baked reload with backbone.ptd as the data file")
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
    pairs = []  # (target, api, swappable, baked, manifest): ONNX once per API timed
    apis = {"both": ("python", "c")}.get(args.onnx_api, (args.onnx_api,))
    for s, b in zip(args.swappable, args.baked):
        ms, mb = read_manifest(s), read_manifest(b)
        if ms["target"] != mb["target"] or ms["mode"] != "swappable" or mb["mode"] != "baked":
            raise SystemExit(f"{s} / {b}: need a swappable and a baked bundle of one target")
        if len(ms["tasks"]) < 2 or [t["name"] for t in ms["tasks"]][:2] != [t["name"] for t in mb["tasks"]][:2]:
            raise SystemExit(f"{s} / {b}: both need the same first two tasks")
        for api in (apis if ms["target"] == "onnx" else ("python",)):
            pairs.append((ms["target"], api, s, b, ms))
    et_pairs = [p for p in pairs if p[0] == "executorch"]
    if len(args.shared) not in (0, len(et_pairs)):
        raise SystemExit(f"give one --shared bundle per ExecuTorch pair ({len(et_pairs)}), or none")
    shared_for: dict[str, Path] = {}  # swappable bundle -> the shared bundle timed beside its pair
    for (_, _, s, b, ms), sh in zip(et_pairs, args.shared):
        msh = read_manifest(sh)
        if msh["target"] != "executorch" or msh["mode"] != "shared" or \
                [t["name"] for t in msh["tasks"]][:2] != [t["name"] for t in ms["tasks"]][:2]:
            raise SystemExit(f"{sh}: need an ExecuTorch shared bundle with the same first two tasks as {s}")
        shared_for[str(s)] = sh
    args.work.mkdir(parents=True, exist_ok=True)
    inputs = args.work / "task_switch_row.npz"
    ids, mask = _rows(pairs[0][4], args.runs, args.length)
    np.savez(inputs, ids=ids, mask=mask)
    def timed(s: Path, b: Path) -> tuple[Path, ...]:
        return (s, b, shared_for[str(s)]) if str(s) in shared_for else (s, b)

    results: dict[tuple[str, str], list[dict]] = {(str(p), api): [] for _, api, s, b, _ in pairs
                                                  for p in timed(s, b)}
    for r in range(args.rounds):
        for _, api, s, b, _ in pairs:
            for path in timed(s, b):
                cmd = [sys.executable, "-m", "benchmarks.task_switch", "--worker", "--path", str(path), "--inputs",
                       str(inputs), "--switches", str(args.switches), "--api", api]
                done = subprocess.run(cmd, capture_output=True, text=True,
                                      env={**os.environ, "PYTHONWARNINGS": "ignore"})
                line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if done.returncode or line is None:
                    raise SystemExit(f"{path} ({api} API) failed:\n{done.stderr[-3000:]}")
                results[(str(path), api)].append(json.loads(line[len("RESULT "):]))
                print(f"round {r + 1}/{args.rounds} {path} ({api} API): {line[len('RESULT '):]}", flush=True)

    rows = []
    for target, api, s, b, m in pairs:
        def med(path: Path, key: str, api: str = api) -> float:
            return statistics.median(x[key] for x in results[(str(path), api)])

        cold, warm, reload = med(s, "switch_cold"), med(s, "switch_warm"), med(b, "reload")
        # Opening the other task alone; an app can free the previous one after the first run.
        cold_open, reload_open = med(s, "switch_open"), med(b, "reload_open")
        # What the first run after a switch costs beyond a steady run (paired per switch): a
        # memory-mapped adapter is read there, so a switch is only cheap if this stays small too.
        extra_s, extra_b = med(s, "first_run_excess"), med(b, "first_run_excess")
        rows.append({
            "target": target, "api": api, "swappable": str(s), "baked": str(b),
            "tasks": [t["name"] for t in m["tasks"]][:2],
            "adapter_bytes": next(f["bytes"] for f in m["tasks"][1]["files"] if f["role"] == "adapter"),
            "adapter_dtype": m.get("adapter_dtype", "float32"),
            "switch_cold_ms": cold, "switch_warm_ms": warm, "reload_ms": reload,
            "switch_open_ms": cold_open, "swappable_release_previous_ms": med(s, "release"),
            "reload_open_ms": reload_open, "baked_release_previous_ms": med(b, "release"),
            "swappable_first_run_ms": med(s, "first_run"), "swappable_steady_run_ms": med(s, "steady_run"),
            "baked_first_run_ms": med(b, "first_run"), "baked_steady_run_ms": med(b, "steady_run"),
            "swappable_first_run_excess_ms": extra_s, "baked_first_run_excess_ms": extra_b,
            "x_reload_over_switch_cold": reload / cold,
            "x_reload_over_switch_warm": reload / warm if warm > 0 else None,
            "x_reload_open_over_switch_open": reload_open / cold_open,
            "x_reload_over_switch_cold_with_first_run_excess":
                (reload + max(extra_b, 0.0)) / (cold + max(extra_s, 0.0)),
            "x_switch_plus_first_run": (reload + med(b, "first_run")) / (cold + med(s, "first_run")),
            "rounds": {k: results[(str(p), api)] for k, p in (("swappable", s), ("baked", b))},
        })
        if str(s) in shared_for:
            sh = shared_for[str(s)]
            rows[-1] |= {"shared": str(sh), "shared_reload_ms": med(sh, "reload"),
                         "shared_reload_open_ms": med(sh, "reload_open"),
                         "shared_release_previous_ms": med(sh, "release"),
                         "shared_first_run_ms": med(sh, "first_run"), "shared_steady_run_ms": med(sh, "steady_run"),
                         "shared_first_run_excess_ms": med(sh, "first_run_excess"),
                         "x_reload_over_shared_reload": reload / med(sh, "reload"),
                         "x_shared_reload_over_switch_cold": med(sh, "reload") / cold}
            rows[-1]["rounds"]["shared"] = results[(str(sh), api)]
    record = {**provenance("benchmarks.task_switch", argv), "length": args.length, "batch": 1,
              "switches_per_process": args.switches, "rounds": args.rounds,
              "notes": {"first_run_excess": "median over switches of (first run after the switch - the steady run "
                                            "after it); negative excesses count as 0 in the _with_first_run_excess "
                                            "ratio",
                        "open_and_release": "switch_cold / reload = opening the other task (switch_open / reload_open) "
                                            "+ freeing the previous task's adapter or model (release_previous), "
                                            "which an app may instead do after the first run"},
              "rows": rows}
    print(f"\n{'target':<11} {'api':<6} {'switch cold':>11} {'open only':>9} {'+1st run':>9} {'switch warm':>11} "
          f"{'reload':>9} {'reload/cold':>11} {'open/open':>9} {'incl. 1st run':>13}")
    for row in rows:
        print(f"{row['target']:<11} {row['api']:<6} {row['switch_cold_ms']:9.3f}ms {row['switch_open_ms']:7.3f}ms "
              f"{row['swappable_first_run_excess_ms']:7.3f}ms {row['switch_warm_ms']:9.4f}ms {row['reload_ms']:7.2f}ms "
              f"{row['x_reload_over_switch_cold']:11.1f} {row['x_reload_open_over_switch_open']:9.1f} "
              f"{row['x_reload_over_switch_cold_with_first_run_excess']:13.1f}")
        if "shared" in row:
            print(f"{'':<11} shared: reload {row['shared_reload_ms']:.2f}ms (open {row['shared_reload_open_ms']:.2f}ms), "
                  f"steady run {row['shared_steady_run_ms']:.3f}ms against baked {row['baked_steady_run_ms']:.3f}ms "
                  f"and swappable {row['swappable_steady_run_ms']:.3f}ms")
    write_results(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
