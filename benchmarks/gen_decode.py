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
import statistics
from pathlib import Path

from benchmarks.common import provenance, write_results


def _configs(bundles: list[Path], task: str):
    """(runtime, bundle folder name, label, generate(prompt, n, eos) -> Generation) for every bundle
    and variant (two bundles of one runtime and mode, e.g. before and after a change, stay apart)."""
    import torch
    from calora.export.manifest import read_manifest
    from calora.targets import get_target

    out = []
    for b in bundles:
        m = read_manifest(b)
        runner = get_target(m["target"]).open(b, m)
        out.append((m["target"], b.name, f"{m['mode']} with adapter",
                    lambda p, n, e, r=runner: r.generate(task, p, n, e)))
        if m["mode"] == "swappable":
            if m["target"] == "onnx":
                session, _ = runner._session(task)
                out.append((m["target"], b.name, "swappable, no adapter",
                            lambda p, n, e, s=session: s.generate(p, n, e, None)))
            else:
                session, extra = runner._session(task)
                zeros = [torch.zeros_like(t) for t in extra]
                out.append((m["target"], b.name, "swappable, zero adapter",
                            lambda p, n, e, s=session, z=zeros: s.generate(p, n, e, z)))
    return out


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", nargs="+", required=True, type=Path)
    ap.add_argument("--task", required=True)
    ap.add_argument("--runs", default="calora_runs")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-pytorch", action="store_true",
                    help="leave out the PyTorch eager fp32 row (the uncompressed backbone with the teacher LoRA)")
    args = ap.parse_args(argv)

    from calora.export.manifest import read_manifest
    from calora.train.artifacts import read_json
    from calora.train.backbones import load_tokenizer
    from calora.validate.generative import gen_examples
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
        configs.insert(0, ("pytorch", "eager fp32", "uncompressed + teacher LoRA", _pytorch_eager(teacher)))
    samples: dict[tuple[str, str, str], dict[str, list[float]]] = \
        {(r, b, l): {"prefill": [], "decode": []} for r, b, l, _ in configs}
    for _ in range(args.rounds):
        for runtime, bundle, label, gen in configs:  # interleaved: each round runs every configuration once
            for p in ex.prompts:
                g = gen(p, args.new_tokens, eos)
                samples[(runtime, bundle, label)]["prefill"].append(g.prefill_tokens_per_s)
                samples[(runtime, bundle, label)]["decode"].append(g.decode_tokens_per_s)
    rows = [{"runtime": r, "bundle": b, "variant": l, "prefill_tokens_per_s": statistics.median(v["prefill"]),
             "decode_tokens_per_s": statistics.median(v["decode"]), "generations": len(v["decode"])}
            for (r, b, l), v in samples.items()]
    result = {**provenance("benchmarks.gen_decode", argv),
              "task": args.task, "prompts": len(ex.prompts),
              "median_prompt_tokens": statistics.median(len(p) for p in ex.prompts),
              "new_tokens": args.new_tokens, "rounds": args.rounds, "rows": rows}
    write_results(args.out, result)
    print(f"{'runtime':<11} {'bundle':<28} {'variant':<26} {'prefill tok/s':>14} {'decode tok/s':>13}")
    for r in rows:
        print(f"{r['runtime']:<11} {r['bundle']:<28} {r['variant']:<26} {r['prefill_tokens_per_s']:>14.0f} "
              f"{r['decode_tokens_per_s']:>13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
