"""Decode and prefill speed of generative bundles, with and without the task adapter.

For each runtime (one bundle per mode): the baked program, the swappable backbone with the task's
adapter, and the same backbone with no adapter (onnxruntime-genai: no active adapter; ExecuTorch:
all-zero adapter inputs); and PyTorch eager fp32 as the baseline (the uncompressed backbone with
the task's teacher LoRA, Hugging Face's own KV cache). Greedy, batch 1.

Each configuration runs in its own worker process (loaded once), and the configurations take turns
round by round on the same prompts; the medians are reported, because the machine is shared and
noisy, and each configuration's median decode speed per round too (`decode_tokens_per_s_by_round`),
so two configurations can be compared round by round. Separate processes because in one process
the runtimes' thread pools share the cores: ONNX Runtime's and XNNPACK's workers keep spinning for
a while after a run, into the next configuration's time. `--threads N` gives every runtime N intra-op threads; by default each keeps
its own, and they differ: on 2 x86 cores onnxruntime-genai 0.18 ran one thread while ExecuTorch's
XNNPACK and PyTorch ran two (docs/RESULTS.md, section 5).

    python -m benchmarks.gen_decode --bundles B1 B2 ... --runs RUNS --task T --threads 2 --out results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from benchmarks.common import provenance, teacher_key, write_results


@dataclasses.dataclass
class Config:
    """One timed configuration: how it generates, its teacher-forced logits (None: not scored),
    and the bytes of the files its runtime loads (None: not a separate artifact)."""

    runtime: str
    bundle: str
    variant: str
    generate: Callable
    logits: Callable | None = None
    bytes: int | None = None


def _runtime_bytes(bundle: Path, manifest: dict, task: str) -> int:
    """Bytes an app ships for `task`: the shared backbone files and the task's own files; of an
    ONNX graph stored as .onnx and .ort, the .ort that onnxruntime-genai's config names."""
    entry = next(t for t in manifest["tasks"] if t["name"] == task)
    files = [*manifest["backbone"]["files"], *entry["files"]]
    ort = {Path(f["path"]).with_suffix("") for f in files if f["path"].endswith(".ort")}
    return sum(int(f["bytes"]) for f in files
               if not (f["path"].endswith(".onnx") and Path(f["path"]).with_suffix("") in ort))


def _labels(bundles: list[Path]) -> list[str]:
    """Two bundles of one runtime and mode (e.g. before and after a change) stay apart by folder
    name, or by parent/folder where the folder names are the same."""
    names = [b.name for b in bundles]
    return [b.name if names.count(b.name) == 1 else f"{b.parent.name}/{b.name}" for b in bundles]


def _variants(bundle: Path) -> list[str]:
    """The configurations of one bundle: with the task's adapter; swappable ones also without it."""
    from calora.export.manifest import read_manifest

    return ["adapter", "no adapter"] if read_manifest(bundle)["mode"] == "swappable" else ["adapter"]


def _bundle_config(bundle: Path, label: str, task: str, variant: str) -> Config:
    import torch
    from calora.export.manifest import read_manifest
    from calora.targets import get_target

    m = read_manifest(bundle)
    runner = get_target(m["target"]).open(bundle, m)
    if variant == "adapter":
        return Config(m["target"], label, f"{m['mode']} with adapter",
                      lambda p, n, e, r=runner: r.generate(task, p, n, e),
                      lambda ids, r=runner: r.forward_logits(task, ids), _runtime_bytes(bundle, m, task))
    session, extra = runner._session(task)
    if m["target"] == "onnx":
        return Config(m["target"], label, "swappable, no adapter",
                      lambda p, n, e, s=session: s.generate(p, n, e, None))
    zeros = [torch.zeros_like(t) for t in extra]
    return Config(m["target"], label, "swappable, zero adapter",
                  lambda p, n, e, s=session, z=zeros: s.generate(p, n, e, z))


def _set_threads(threads: int) -> None:
    """Cap every runtime at `threads` intra-op threads (0: leave each runtime's default)."""
    if not threads:
        return
    import torch
    from calora.targets.onnx_genai_runtime import GenaiSession

    torch.set_num_threads(threads)
    GenaiSession.intra_op_threads = threads
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    _unsafe_reset_threadpool(threads)  # XNNPACK's threadpool


def _alternative(folder: Path) -> Config:
    """The do-it-yourself route (`benchmarks.gen_alternative`) in onnxruntime-genai."""
    from calora.targets.onnx_genai_runtime import GenaiSession

    session = GenaiSession(folder)
    size = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx"))
    return Config("onnx", "alternative", "merged fp32 + og builder int4",
                  lambda p, n, e: session.generate(p, n, e), lambda ids: session.forward_logits(ids), size)


def _pytorch_eager(model):
    """generate(prompt, n, eos) of a Hugging Face causal LM in PyTorch eager fp32 with its own KV
    cache (`past_key_values`), timed as the runtimes are: the prompt's forward, then each step."""
    import time

    import torch
    from calora.targets.generation import Generation

    def generate(prompt: list[int], n: int, eos: int) -> Generation:
        with torch.no_grad():
            t0 = time.perf_counter()
            out = model(input_ids=torch.tensor([prompt]), use_cache=True)
            prefill = time.perf_counter() - t0
            tokens: list[int] = []
            steps: list[float] = []
            token = int(out.logits[0, -1].argmax())
            while token != eos and len(tokens) < n:
                tokens.append(token)
                if len(tokens) == n:
                    break
                t0 = time.perf_counter()
                out = model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
                steps.append(time.perf_counter() - t0)
                token = int(out.logits[0, -1].argmax())
        return Generation(tokens, prefill, len(prompt), steps)

    return generate


def _perplexity(logits: Callable, held_out) -> float:
    """exp(mean next-token NLL of each held-out response given its prompt), scored as
    calora-validate scores an artifact (its `_nll`)."""
    import torch
    from calora.validate.generative import _nll

    total, count = 0.0, 0
    with torch.no_grad():
        for p, t in zip(held_out.prompts, held_out.targets):
            ids = p + t
            s, c = _nll(logits(ids), ids, len(p))
            total, count = total + s, count + c
    return math.exp(total / max(count, 1))


# ---- worker: one configuration in its own process ------------------------------------------------------
def _worker_config(spec: dict) -> Config:
    if spec["kind"] == "bundle":
        return _bundle_config(Path(spec["bundle"]), spec["label"], spec["task"], spec["variant"])
    if spec["kind"] == "alternative":
        return _alternative(Path(spec["folder"]))
    from calora.train.artifacts import read_json
    from calora.validate.generative import _torch_logits
    from calora.validate.references import References

    task_dir = Path(spec["task_dir"])  # resolved once by the driver
    teacher = References().teacher(task_dir, read_json(task_dir / "calora_config.json"))
    if isinstance(teacher, str):
        raise SystemExit(f"--runs {spec['runs']}: {teacher} (or pass --no-pytorch)")
    size = sum(t.numel() * t.element_size() for t in teacher.state_dict().values())
    return Config("pytorch", "eager fp32", "uncompressed + teacher LoRA", _pytorch_eager(teacher),
                  lambda ids: _torch_logits(teacher, ids), size)


def worker(spec: dict) -> int:
    """Serve one configuration: `round` generates every prompt once and answers its timings,
    `perplexity` scores the held-out examples, `exit` ends. One JSON line per answer."""
    from types import SimpleNamespace

    _set_threads(spec["threads"])
    config = _worker_config(spec)
    data = json.loads(Path(spec["data"]).read_text())

    def answer(obj: dict) -> None:
        print("RESULT " + json.dumps(obj), flush=True)

    answer({"runtime": config.runtime, "bundle": config.bundle, "variant": config.variant, "bytes": config.bytes,
            "scored": config.logits is not None})
    for line in sys.stdin:
        command = line.strip()
        if command == "round":
            gens = [config.generate(p, spec["new_tokens"], -1) for p in data["prompts"]]  # -1: never stop early
            answer({"prefill": [g.prefill_tokens_per_s for g in gens], "decode": [g.decode_tokens_per_s for g in gens]})
        elif command == "perplexity":
            held_out = SimpleNamespace(prompts=data["held_out_prompts"], targets=data["held_out_targets"])
            answer({"perplexity": _perplexity(config.logits, held_out)})
        else:
            return 0
    return 0


class _Worker:
    """The driver's handle on one worker process."""

    def __init__(self, spec: dict, log: Path) -> None:
        self.log = log
        with log.open("w") as err:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.gen_decode", "--worker", json.dumps(spec)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                         env={**os.environ, "PYTHONWARNINGS": "ignore"},
                                         cwd=Path(__file__).resolve().parents[1])  # where `benchmarks` imports from
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
        raise SystemExit(f"a gen_decode worker failed; its log {self.log}:\n{self.log.read_text()[-3000:]}")

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """End the worker; a worker that already failed is reaped, never allowed to hide that failure."""
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--bundles", nargs="+", type=Path)
    ap.add_argument("--task")
    ap.add_argument("--runs", default="calora_runs")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--work", type=Path,
                    help="build the do-it-yourself alternative here (benchmarks.gen_alternative) and time it too")
    ap.add_argument("--quality-examples", type=int, default=64,
                    help="held-out examples for each scored configuration's teacher-forced perplexity (0: none)")
    ap.add_argument("--no-pytorch", action="store_true",
                    help="leave out the PyTorch eager fp32 row (the uncompressed backbone with the teacher LoRA)")
    ap.add_argument("--threads", type=int, default=0,
                    help="run every runtime with this many intra-op threads (onnxruntime-genai's "
                         "intra_op_num_threads, ExecuTorch's XNNPACK threadpool, torch.set_num_threads); 0: each "
                         "runtime's default, which differ (onnxruntime-genai 0.18 ran one thread on 2 x86 cores)")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    for flag in ("bundles", "task", "out"):
        if not getattr(args, flag):
            ap.error(f"--{flag} is required")
    if args.threads < 0:
        ap.error(f"--threads {args.threads}: must be 0 (each runtime's default) or a positive count")

    from calora.export.manifest import read_manifest
    from calora.train.artifacts import read_json
    from calora.train.backbones import load_tokenizer
    from calora.validate.generative import gen_examples
    from calora.validate.references import find_task_dir

    m = read_manifest(args.bundles[0])
    entry = next((t for t in m["tasks"] if t["name"] == args.task), None)
    if entry is None:
        ap.error(f"--task {args.task}: not in {args.bundles[0]} (tasks: {', '.join(t['name'] for t in m['tasks'])})")
    task_dir = find_task_dir(args.task, entry, args.runs)
    cfg = read_json(task_dir / "calora_config.json")
    tok = load_tokenizer(cfg["backbone"]["source"])
    context = int(m["generation"]["max_context"])
    ex = gen_examples(args.task, cfg, tok, context, args.prompts)
    held_out = gen_examples(args.task, cfg, tok, context, args.quality_examples) if args.quality_examples else None
    # Absolute paths: the workers run from the repository root.
    common = {"task": args.task, "runs": str(args.runs), "task_dir": str(Path(task_dir).resolve()),
              "threads": args.threads, "new_tokens": args.new_tokens}
    specs = []
    if not args.no_pytorch:
        specs.append({**common, "kind": "pytorch"})
    for b, label in zip(args.bundles, _labels(args.bundles)):
        specs += [{**common, "kind": "bundle", "bundle": str(b.resolve()), "label": label, "variant": v} for v in _variants(b)]
    if args.work is not None:
        from benchmarks.gen_alternative import build

        folder = build(task_dir, cfg, args.work / f"og-int4-{args.task}-{teacher_key(task_dir, cfg)}")
        specs.append({**common, "kind": "alternative", "folder": str(Path(folder).resolve())})
    with tempfile.TemporaryDirectory(prefix="gen_decode-") as tmp:
        data = Path(tmp) / "data.json"
        data.write_text(json.dumps({"prompts": ex.prompts,
                                    "held_out_prompts": held_out.prompts if held_out else [],
                                    "held_out_targets": held_out.targets if held_out else []}))
        workers = []
        try:
            for i, spec in enumerate(tqdm(specs, desc="loading configurations", unit="config")):
                workers.append(_Worker({**spec, "data": str(data)}, Path(tmp) / f"worker{i}.log"))
            samples = [{"prefill": [], "decode": [], "rounds": []} for _ in workers]
            for _ in tqdm(range(args.rounds), desc="rounds", unit="round"):
                for w, got in zip(workers, samples):  # interleaved: each round runs every configuration once
                    r = w.ask("round")
                    got["prefill"] += r["prefill"]
                    got["decode"] += r["decode"]
                    got["rounds"].append(statistics.median(r["decode"]))
            rows = []
            for w, got in zip(tqdm(workers, desc="held-out perplexity", unit="config"), samples):
                row = {k: w.info[k] for k in ("runtime", "bundle", "variant")}
                row.update({"prefill_tokens_per_s": statistics.median(got["prefill"]),
                            "decode_tokens_per_s": statistics.median(got["decode"]),
                            "generations": len(got["decode"]), "bytes": w.info["bytes"],
                            # per round, so two configurations can be compared round by round: the pairs
                            # share the machine's state of that minute, which drifts by more than many
                            # of the differences measured (docs/RESULTS.md section 5, 2026-12-07)
                            "decode_tokens_per_s_by_round": [round(x, 2) for x in got["rounds"]]})
                if w.info["scored"] and held_out is not None:
                    row["perplexity"] = w.ask("perplexity")["perplexity"]
                rows.append(row)
        finally:
            for w in workers:
                w.close()
    result = {**provenance("benchmarks.gen_decode", argv),
              "task": args.task, "prompts": len(ex.prompts),
              "median_prompt_tokens": statistics.median(len(p) for p in ex.prompts),
              "new_tokens": args.new_tokens, "rounds": args.rounds,
              "threads": args.threads or "each runtime's default", "processes": "one per configuration",
              "perplexity_examples": len(held_out.prompts) if held_out else 0, "rows": rows}
    write_results(args.out, result)
    print(f"{'runtime':<9} {'bundle':<28} {'variant':<30} {'prefill tok/s':>13} {'decode tok/s':>12} "
          f"{'MB':>7} {'ppl':>8}")
    for r in rows:
        mb = f"{r['bytes'] / 1e6:7.1f}" if r["bytes"] else f"{'-':>7}"
        ppl = f"{r['perplexity']:8.2f}" if "perplexity" in r else f"{'-':>8}"
        print(f"{r['runtime']:<9} {r['bundle']:<28} {r['variant']:<30} {r['prefill_tokens_per_s']:>13.0f} "
              f"{r['decode_tokens_per_s']:>12.1f} {mb} {ppl}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
