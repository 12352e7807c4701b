"""Batch-1 latency, file size and accuracy of classification artifacts against what a user would
ship instead.

Configurations (each one timed in its own process, the processes interleaved round by round):

- ``pytorch-fp32``: the uncompressed backbone with the teacher LoRA merged, PyTorch eager fp32;
- ``alternative-ort-int8``: that merged model exported to ONNX and int8-quantized with
  onnxruntime's ``quantize_dynamic`` (the obvious do-it-yourself route), on ONNX Runtime; with
  ``--per-channel-alternative`` also its per-channel form (``per_channel=True``); with
  ``--unfused-alternative`` also its ``.ort`` converted as calora converts classification bundles
  (Add + LayerNormalization unfused), so a graph-level gain is given to both sides;
- every calora bundle given with ``--bundles`` (baked and swappable, any target but Core ML on
  Linux), through the same runner ``calora-validate`` uses, so what is timed is what is validated.

Inputs are real test-split texts of the task, tokenized and padded to ``--length`` tokens, batch 1.
Each round starts one process per configuration; it loads the artifact, warms up, then times
``--examples`` single-example runs. Reported: the median over rounds of each round's median, and
ratios against ``alternative-ort-int8`` and ``pytorch-fp32`` computed from those medians. Accuracy
is measured on the whole test split (padded to ``--length``) once per configuration.

    python -m benchmarks.classify_latency --runs calora_runs --task rotten_tomatoes \\
        --bundles bundles/onnx-baked bundles/onnx-swappable --out benchmarks/results/classify.json
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

from benchmarks.common import provenance, teacher_key, write_results

ALT = "alternative-ort-int8"
EAGER = "pytorch-fp32"


# ---- the alternative: merged fp32 model, ONNX, quantize_dynamic ---------------------------------------
def _merged_teacher(task_dir: Path, cfg: dict):
    """The teacher LoRA merged into the uncompressed backbone's weights (W + s * B A): a plain model."""
    import torch

    from calora.train.adapters import adapted_layers
    from calora.validate.references import References

    model = References().teacher(task_dir, cfg)
    if isinstance(model, str):
        raise SystemExit(model)
    with torch.no_grad():
        for name, layer in adapted_layers(model).items():
            base = layer.base_layer
            base.weight += layer.scaling * (layer.lora_B.weight @ layer.lora_A.weight)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, base)
    return model.eval()


def build_alternative(task_dir: Path, cfg: dict, work: Path, length: int, per_channel: bool = False,
                      unfused: bool = False) -> dict[str, Path]:
    """fp32 ONNX of the merged teacher and its quantize_dynamic int8 form (what a user would do);
    with `per_channel`, also the per-channel int8 form (one weight scale per output column, the
    option a careful user turns on when the per-tensor model loses accuracy); with `unfused`, also
    the int8 form converted to .ort as calora converts its classification bundles (Add +
    LayerNormalization left unfused, `calora.targets.onnx.CLASSIFY_UNFUSED`): the same graph
    change given to the alternative."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from calora.export.graph import Baked

    work.mkdir(parents=True, exist_ok=True)
    fp32, int8, int8_pc = work / "merged_fp32.onnx", work / "merged_int8.onnx", work / "merged_int8_per_channel.onnx"
    if not fp32.is_file():
        model = Baked(_merged_teacher(task_dir, cfg)).eval()  # the wrapper too: no export warning
        ids = torch.ones(1, length, dtype=torch.long)
        torch.onnx.export(model, (ids, torch.ones_like(ids)), str(fp32), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamo=True, external_data=False,
                          dynamic_shapes=({0: "batch", 1: "sequence"}, {0: "batch", 1: "sequence"}))
    if not int8.is_file():
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    out = {"fp32": fp32, "int8": int8}
    if unfused:
        from calora.targets.onnx import CLASSIFY_UNFUSED, _to_ort

        ort_unfused = work / "merged_int8_unfused.ort"
        if not ort_unfused.is_file():
            _to_ort(int8, ort_unfused, CLASSIFY_UNFUSED)
        out["int8_unfused"] = ort_unfused
    if per_channel:
        if not int8_pc.is_file():
            quantize_dynamic(str(fp32), str(int8_pc), weight_type=QuantType.QInt8, per_channel=True)
        out["int8_per_channel"] = int8_pc
    return out


def _files(manifest: dict) -> list[dict]:
    """Every artifact file of a bundle: the shared backbone's and each task's."""
    return list(manifest["backbone"].get("files", [])) + [f for t in manifest["tasks"] for f in t.get("files", [])]


def accuracy_level_copy(bundle: Path, task: str, work: Path, level: int) -> Path | None:
    """The bundle's baked .onnx for `task` with every MatMulNBits at `level` (0: float activations;
    4: int8 activations, MLAS quantizing each block of inputs), converted to .ort: the same graph
    at another activation precision, measured side by side with the shipped one."""
    import onnx
    from onnx import helper

    from calora.export.manifest import read_manifest
    from calora.targets.onnx import CLASSIFY_UNFUSED, _to_ort

    m = read_manifest(bundle)
    if m["target"] != "onnx" or m["mode"] != "baked":
        return None
    src = next(bundle / f["path"] for f in _files(m) if f["task"] == task and f["path"].endswith(".onnx"))
    stem = f"{bundle.parent.name}-{bundle.name}_{task}_level{level}"  # bundles may share a folder name
    dest = work / f"{stem}.ort"
    if not dest.is_file():
        proto = onnx.load_model(str(src))
        for node in proto.graph.node:
            if node.op_type == "MatMulNBits":
                kept = [a for a in node.attribute if a.name != "accuracy_level"]
                del node.attribute[:]
                node.attribute.extend(kept + [helper.make_attribute("accuracy_level", level)])
        tmp = work / f"{stem}.onnx"
        onnx.save_model(proto, str(tmp))
        _to_ort(tmp, dest, CLASSIFY_UNFUSED)  # converted as the bundle's own .ort was
    return dest


# ---- one configuration, in its own process ------------------------------------------------------------
def _set_threads(kind: str, path: str, threads: int) -> None:
    """Cap the configuration's runtime at `threads` intra-op threads (0: leave its default)."""
    if not threads:
        return
    import torch

    torch.set_num_threads(threads)
    from calora.targets.onnx_runtime import OnnxRunner

    OnnxRunner.intra_op_threads = threads
    if kind == "bundle":
        from calora.export.manifest import read_manifest

        if read_manifest(Path(path))["target"] == "executorch":
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(threads)  # XNNPACK's threadpool


def _predict_fn(kind: str, path: str, task: str, task_dir: str, threads: int = 0):
    """f(ids, mask) -> logits for one configuration."""
    if kind == "ort":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return lambda ids, mask: sess.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
    if kind == "eager":
        import torch

        from calora.train.artifacts import read_json

        model = _merged_teacher(Path(task_dir), read_json(Path(task_dir) / "calora_config.json"))

        def run(ids, mask):
            with torch.no_grad():
                return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
        return run
    from calora.export.manifest import read_manifest
    from calora.targets import get_target

    bundle = Path(path)
    runner = get_target(read_manifest(bundle)["target"]).open(bundle, read_manifest(bundle))
    return lambda ids, mask: runner.logits(task, ids, mask)


def _import_runtime(kind: str, path: str) -> None:
    """Import what the configuration runs on before the load clock starts: an app links its
    runtime, it does not pay Python's imports on every model load."""
    import importlib

    import onnxruntime  # noqa: F401
    import torch  # noqa: F401

    if kind == "bundle":
        from calora.export.manifest import read_manifest

        target = read_manifest(Path(path))["target"]
        importlib.import_module(f"calora.targets.{target}_runtime")
        if target == "executorch":
            import executorch.kernels.quantized  # noqa: F401
            import executorch.runtime  # noqa: F401


def worker(args) -> int:
    data = np.load(args.inputs)
    ids, mask = data["ids"], data["mask"]
    t0 = time.perf_counter()
    _import_runtime(args.kind, args.path)
    import_ms = (time.perf_counter() - t0) * 1e3
    _set_threads(args.kind, args.path, args.worker_threads)
    # load_ms: opening the artifact (session / program / adapter) and its first run.
    t0 = time.perf_counter()
    f = _predict_fn(args.kind, args.path, args.task, args.task_dir, args.worker_threads)
    f(ids[:1], mask[:1])
    load_ms = (time.perf_counter() - t0) * 1e3
    out: dict = {"load_ms": load_ms, "import_ms": import_ms}
    if args.accuracy:
        logits = np.concatenate([f(ids[i:i + 64], mask[i:i + 64]) for i in range(0, len(ids), 64)])
        out["accuracy"] = float((logits.argmax(-1) == data["labels"]).mean())
    for i in range(3):  # warm-up
        f(ids[i:i + 1], mask[i:i + 1])
    times = []
    for i in range(args.examples):
        j = i % len(ids)
        t = time.perf_counter()
        f(ids[j:j + 1], mask[j:j + 1])
        times.append((time.perf_counter() - t) * 1e3)
    out["median_ms"] = statistics.median(times)
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across exec,
    # so every worker would report the driver's peak (seen: 1,043 MB for every configuration).
    try:
        hwm = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
        out["peak_rss_mb"] = int(hwm.split()[1]) / 1024
    except (OSError, StopIteration):
        pass
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# ---- driver -------------------------------------------------------------------------------------------
def _bundle_configs(bundles: list[Path], task: str) -> list[dict]:
    from calora.export.manifest import read_manifest

    out = []
    specs = {read_manifest(b)["backbone"]["compression"]["text"] for b in bundles}
    for b in bundles:
        m = read_manifest(b)
        tag = f" [{m['backbone']['compression']['text']}]" if len(specs) > 1 else ""
        files = _files(m)
        # What one task adds: its adapter file (swappable), or its program over the shared backbone.ptd (shared)
        own = ("adapter", "model") if m["mode"] == "shared" else ("adapter",)
        size = sum(f["bytes"] for f in files if f["role"] in ("model", "backbone") and f.get("task") in (None, task)
                   and not f["path"].endswith(".onnx") and not (f["role"] in own and f.get("task") == task))
        adapter = sum(f["bytes"] for f in files if f["role"] in own and f.get("task") == task)
        out.append({"name": f"calora {m['target']} {m['mode']}{tag}", "kind": "bundle", "path": str(b),
                    "bytes": size, "adapter_bytes": adapter})
    return out


def _run(cfg: dict, args, inputs: Path, accuracy: bool) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.classify_latency", "--worker", "--kind", cfg["kind"], "--path", cfg["path"],
           "--task", args.task, "--task-dir", str(args.task_dir), "--inputs", str(inputs),
           "--examples", str(args.examples), "--worker-threads", str(cfg.get("threads", 0))] + (["--accuracy"] if accuracy else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode or line is None:
        raise SystemExit(f"{cfg['name']} failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--task-dir", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--accuracy", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--runs", default="calora_runs")
    ap.add_argument("--task", default="rotten_tomatoes")
    ap.add_argument("--bundles", nargs="*", type=Path, default=[])
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--examples", type=int, default=100, help="timed single-example runs per process")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--onnx-float-activations", action="store_true",
                    help="also time each ONNX baked bundle's model with MatMulNBits at accuracy_level 0")
    ap.add_argument("--onnx-int8-activations", action="store_true",
                    help="also time each ONNX baked bundle's model with MatMulNBits at accuracy_level 4 (int8 "
                         "activations; accuracy measured, parity not validated)")
    ap.add_argument("--per-channel-alternative", action="store_true",
                    help="also time the alternative quantized per channel (quantize_dynamic per_channel=True); "
                         "ratios stay against the per-tensor default")
    ap.add_argument("--unfused-alternative", action="store_true",
                    help="also time the alternative converted to .ort the way calora converts its classification "
                         "bundles (SkipLayerNormFusion off); ratios stay against the plain alternative")
    ap.add_argument("--threads", type=int, nargs="*", default=[],
                    help="also time every configuration capped at each of these intra-op thread counts (thread "
                         "use: does each runtime use the cores it has); default: each runtime's own default only")
    ap.add_argument("--work", type=Path, default=Path("benchmarks/.work"), help="folder for the alternative's models")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)

    from calora.train.artifacts import read_json
    from calora.train.backbones import load_tokenizer
    from calora.validate.references import encode, eval_data

    args.task_dir = Path(args.runs) / args.task / "calora"
    cfg = read_json(args.task_dir / "calora_config.json")
    data = eval_data(args.task, cfg, None, None)
    ids, mask = encode(load_tokenizer(cfg["backbone"]["source"]), list(data.texts), args.length)
    names = list(cfg["task"]["label_names"])
    labels = np.array([names.index(lab) for lab in data.labels])
    args.work.mkdir(parents=True, exist_ok=True)
    inputs = args.work / f"{args.task}_{args.length}.npz"
    np.savez(inputs, ids=ids, mask=mask, labels=labels)
    alt = build_alternative(args.task_dir, cfg, args.work / f"{args.task}-{teacher_key(args.task_dir, cfg)}", args.length,
                            per_channel=args.per_channel_alternative, unfused=args.unfused_alternative)
    configs = [{"name": EAGER, "kind": "eager", "path": "", "bytes": alt["fp32"].stat().st_size, "adapter_bytes": 0},
               {"name": ALT, "kind": "ort", "path": str(alt["int8"]), "bytes": alt["int8"].stat().st_size,
                "adapter_bytes": 0}]
    if "int8_unfused" in alt:
        configs.append({"name": f"{ALT} .ort, Add + LayerNorm unfused", "kind": "ort", "path": str(alt["int8_unfused"]),
                        "bytes": alt["int8"].stat().st_size, "adapter_bytes": 0})
    if "int8_per_channel" in alt:
        configs.append({"name": f"{ALT} per-channel", "kind": "ort", "path": str(alt["int8_per_channel"]),
                        "bytes": alt["int8_per_channel"].stat().st_size, "adapter_bytes": 0})
    bundle_configs = _bundle_configs(args.bundles, args.task)
    configs += bundle_configs
    for wanted, level, label in ((args.onnx_float_activations, 0, "float"), (args.onnx_int8_activations, 4, "int8")):
        for b, bundle_cfg in zip(args.bundles, bundle_configs) if wanted else ():
            path = accuracy_level_copy(b, args.task, args.work, level)
            if path is not None:
                configs.append({"name": f"{bundle_cfg['name']}, {label} activations", "kind": "ort",
                                "path": str(path), "bytes": path.stat().st_size, "adapter_bytes": 0})
    base_configs = list(configs)
    for n in args.threads:  # the same configurations again, capped at n threads
        configs += [{**c, "name": f"{c['name']} @{n} thread{'s' if n > 1 else ''}", "threads": n} for c in base_configs]
    names = [c["name"] for c in configs]
    for c in configs:  # results are keyed by name: two bundles that print alike get their folder's name
        if names.count(c["name"]) > 1:
            c["name"] += f" ({Path(c['path']).parent.name}/{Path(c['path']).name})"
    results: dict[str, dict] = {c["name"]: {"rounds_ms": [], "load_ms": [], "import_ms": [], "peak_rss_mb": []}
                                for c in configs}
    for r in range(args.rounds):
        for c in configs:  # interleaved: every configuration once per round
            out = _run(c, args, inputs, accuracy=r == 0 and not c.get("threads"))  # same artifact: once
            res = results[c["name"]]
            res["rounds_ms"].append(out["median_ms"])
            res["load_ms"].append(out["load_ms"])
            res["import_ms"].append(out["import_ms"])
            res["peak_rss_mb"].append(out.get("peak_rss_mb"))
            if "accuracy" in out:
                res["accuracy"] = out["accuracy"]
            print(f"round {r + 1}/{args.rounds} {c['name']:<28} {out['median_ms']:7.2f} ms", flush=True)
    med = {n: statistics.median(v["rounds_ms"]) for n, v in results.items()}
    rows = [{"config": c["name"], "threads": c.get("threads", 0) or "default", "median_ms": med[c["name"]], "x_alternative": med[c["name"]] / med[ALT],
             "x_eager": med[c["name"]] / med[EAGER], "accuracy": results[c["name"]].get("accuracy"),
             "model_bytes": c["bytes"], "adapter_bytes": c["adapter_bytes"],
             "load_ms": statistics.median(results[c["name"]]["load_ms"]),
             "import_ms": statistics.median(results[c["name"]]["import_ms"]),
             "peak_rss_mb": max((x for x in results[c["name"]]["peak_rss_mb"] if x is not None), default=None),
             "rounds_ms": results[c["name"]]["rounds_ms"]} for c in configs]
    record = {**provenance("benchmarks.classify_latency", argv), "task": args.task, "test_examples": len(ids), "length": args.length, "batch": 1,
              "examples_per_process": args.examples, "rounds": args.rounds, "rows": rows}
    print(f"\n{'config':<28} {'median ms':>9} {'x alt':>6} {'x eager':>7} {'acc':>6} {'MB':>7} {'adapter MB':>10}")
    for row in rows:
        acc = f"{100 * row['accuracy']:.1f}" if row["accuracy"] is not None else "-"
        print(f"{row['config']:<28} {row['median_ms']:9.2f} {row['x_alternative']:6.2f} {row['x_eager']:7.2f} "
              f"{acc:>6} {row['model_bytes'] / 1e6:7.2f} {row['adapter_bytes'] / 1e6:10.2f}")
    write_results(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
