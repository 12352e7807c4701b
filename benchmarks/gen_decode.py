"""Decode and prefill speed of generative bundles, with and without the task adapter.

For each runtime (one bundle per mode): the baked program, the swappable backbone with the task's
adapter, and the same backbone with no adapter (onnxruntime-genai: no active adapter; ExecuTorch:
all-zero adapter inputs); and PyTorch eager fp32 as the baseline (the uncompressed backbone with
the task's teacher LoRA, Hugging Face's own KV cache). Configurations are interleaved round by
round on the same prompts and the medians are reported, because the machine is shared and noisy.
Greedy, batch 1.

    python -m benchmarks.gen_decode --bundles B1 B2 ... --runs RUNS --task T --out results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from benchmarks.common import provenance, write_results


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


def _configs(bundles: list[Path], task: str) -> list[Config]:
    """Every bundle with the task's adapter, and swappable ones also without it (two bundles of
    one runtime and mode, e.g. before and after a change, stay apart by folder name, or by
    parent/folder where the folder names are the same)."""
    import torch
    from calora.export.manifest import read_manifest
    from calora.targets import get_target

    out = []
    names = [b.name for b in bundles]
    for b in bundles:
        m = read_manifest(b)
        runner = get_target(m["target"]).open(b, m)
        label = b.name if names.count(b.name) == 1 else f"{b.parent.name}/{b.name}"
        out.append(Config(m["target"], label, f"{m['mode']} with adapter",
                          lambda p, n, e, r=runner: r.generate(task, p, n, e),
                          lambda ids, r=runner: r.forward_logits(task, ids), _runtime_bytes(b, m, task)))
        if m["mode"] == "swappable":
            session, extra = runner._session(task)
            if m["target"] == "onnx":
                out.append(Config(m["target"], label, "swappable, no adapter",
                                  lambda p, n, e, s=session: s.generate(p, n, e, None)))
            else:
                zeros = [torch.zeros_like(t) for t in extra]
                out.append(Config(m["target"], label, "swappable, zero adapter",
                                  lambda p, n, e, s=session, z=zeros: s.generate(p, n, e, z)))
    return out


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", nargs="+", required=True, type=Path)
    ap.add_argument("--task", required=True)
    ap.add_argument("--runs", default="calora_runs")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path,
                    help="build the do-it-yourself alternative here (benchmarks.gen_alternative) and time it too")
    ap.add_argument("--quality-examples", type=int, default=64,
                    help="held-out examples for each scored configuration's teacher-forced perplexity (0: none)")
    ap.add_argument("--no-pytorch", action="store_true",
                    help="leave out the PyTorch eager fp32 row (the uncompressed backbone with the teacher LoRA)")
    args = ap.parse_args(argv)

    from calora.export.manifest import read_manifest
    from calora.train.artifacts import read_json
    from calora.train.backbones import load_tokenizer
    from calora.validate.generative import _torch_logits, gen_examples
    from calora.validate.references import find_task_dir

    m = read_manifest(args.bundles[0])
    entry = next(t for t in m["tasks"] if t["name"] == args.task)
    cfg = read_json(find_task_dir(args.task, entry, args.runs) / "calora_config.json")
    tok = load_tokenizer(cfg["backbone"]["source"])
    ex = gen_examples(args.task, cfg, tok, int(m["generation"]["max_context"]), args.prompts)
    eos = -1  # never stop early: every run decodes exactly --new-tokens tokens
    configs = _configs(args.bundles, args.task)
    if not args.no_pytorch:
        from calora.validate.references import References

        teacher = References().teacher(find_task_dir(args.task, entry, args.runs), cfg)
        if isinstance(teacher, str):
            raise SystemExit(f"--runs {args.runs}: {teacher} (or pass --no-pytorch)")
        size = sum(t.numel() * t.element_size() for t in teacher.state_dict().values())
        configs.insert(0, Config("pytorch", "eager fp32", "uncompressed + teacher LoRA", _pytorch_eager(teacher),
                                 lambda ids: _torch_logits(teacher, ids), size))
    if args.work is not None:
        from benchmarks.gen_alternative import build

        folder = build(find_task_dir(args.task, entry, args.runs), cfg, args.work / f"og-int4-{args.task}")
        configs.append(_alternative(folder))
    samples = {id(c): {"prefill": [], "decode": []} for c in configs}
    for _ in range(args.rounds):
        for c in configs:  # interleaved: each round runs every configuration once
            for p in ex.prompts:
                g = c.generate(p, args.new_tokens, eos)
                samples[id(c)]["prefill"].append(g.prefill_tokens_per_s)
                samples[id(c)]["decode"].append(g.decode_tokens_per_s)
    held_out = gen_examples(args.task, cfg, tok, int(m["generation"]["max_context"]), args.quality_examples)
    rows = []
    for c in tqdm(configs, desc="held-out perplexity", unit="config"):
        v = samples[id(c)]
        row = {"runtime": c.runtime, "bundle": c.bundle, "variant": c.variant,
               "prefill_tokens_per_s": statistics.median(v["prefill"]),
               "decode_tokens_per_s": statistics.median(v["decode"]), "generations": len(v["decode"]),
               "bytes": c.bytes}
        if c.logits is not None and args.quality_examples:
            row["perplexity"] = _perplexity(c.logits, held_out)
        rows.append(row)
    result = {**provenance("benchmarks.gen_decode", argv),
              "task": args.task, "prompts": len(ex.prompts),
              "median_prompt_tokens": statistics.median(len(p) for p in ex.prompts),
              "new_tokens": args.new_tokens, "rounds": args.rounds,
              "perplexity_examples": len(held_out.prompts) if args.quality_examples else 0, "rows": rows}
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
