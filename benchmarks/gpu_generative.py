"""SmolLM2-135M at a GPU schedule: the generative task trained on its whole training split, with
training throughput, against LoRA from scratch on the same compressed backbone.

    python -m benchmarks.gpu_generative --work gpu_runs --results gpu_runs/results       # whole split
    python -m benchmarks.gpu_generative --work gpu_runs --budget-s 420 ...               # fit a time budget

Steps, each a calora command in its own process (logged to ``WORK/logs/<step>.log``):
1. ``convert``: the backbone resolved once (the offline SmolLM2 GGUF is converted into the cache),
   so no later step pays for it.
2. ``probe`` (only with ``--budget-s``): ``calora-train`` on ``--probe-examples`` training examples,
   timing the teacher and CA-LoRA per example; the main runs then take the largest number of
   training examples (a multiple of the batch size, at most the whole split) whose predicted time fits
   the budget. The results file records the number used, so the run can be repeated with
   ``--max-train-examples N``. The probe's rates include CUDA's warm-up, so the prediction errs long.
3. ``train``: ``calora-train``: teacher (LoRA on the fp32 backbone), then CA-LoRA on the compressed
   backbone, one epoch each, evaluated on the held-out splits (perplexity and greedy generations).
4. ``baseline``: ``calora.train.ablation`` with the same teacher and schedule: compressed + LoRA from
   scratch (QLoRA-style); skipped, and said so, if the budget is spent.

Writes ``RESULTS/gpu_generative_<task>.json`` and ``.md``: rows with held-out perplexity, training
seconds, steps, examples and real (non-pad) tokens per second, the share of the NLL gap CA-LoRA
recovers, and how the file was produced (command, machine, GPU, date).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.common import Steps, provenance, write_results

SCRATCH = "compressed + LoRA from scratch"


def _train_args(a: argparse.Namespace, n: int | None) -> list[str]:
    """The calora-train flags both the main run and the baseline share (one schedule, one teacher recipe)."""
    args = ["--backbone", a.backbone, "--task", a.task, "--batch-size", str(a.batch_size), "--lr", str(a.lr),
            "--epochs", str(a.epochs), "--max-train-examples", "all" if n is None else str(n),
            "--max-eval-examples", a.max_eval_examples, "--eval-generate-examples", str(a.eval_generate_examples),
            "--mixed-precision", a.mixed_precision, "--seed", "0"]
    return args + (["--compression", a.compression] if a.compression else [])


def _train_split(task: str):
    from calora.train.gen_tasks import load_gen_task

    return load_gen_task(task).splits["train"]


def _tokens(a: argparse.Namespace, split, n: int) -> int:
    """Real (non-pad) tokens in the first `n` training examples as calora-train encodes them."""
    from calora.train.backbones import load_tokenizer
    from calora.train.config import KIND_TRAIN_DEFAULTS, GenerationSettings
    from calora.train.gen_data import GenEncoded, PromptFormat

    tok = load_tokenizer(a.backbone)
    enc = GenEncoded(split, tok, PromptFormat.of(tok), KIND_TRAIN_DEFAULTS["generate"]["max_length"],
                     GenerationSettings().max_response_tokens, n)
    return sum(len(ids) for ids in enc.input_ids)


def _choose(a, left_s: float, split: int, probe: dict, probe_s: float) -> tuple[int | None, str]:
    """The largest multiple of the batch size whose predicted time fits the `left_s` seconds left,
    from the probe run's metrics and wall time `probe_s`."""
    n_p = min(a.probe_examples, split)
    per_ex = (probe["teacher"]["train_seconds"] + probe["train_seconds"]) / n_p
    fixed = probe_s - probe["teacher"]["train_seconds"] - probe["train_seconds"]
    # main run + baseline: each pays the fixed cost (load, compress, evaluate); the baseline's LoRA
    # step is taken as the CA-LoRA step (an upper bound: no teacher, no recovery branches)
    room = left_s - a.margin_s - 2 * fixed
    per_ex_both = per_ex + probe["train_seconds"] / n_p
    n = int(room / per_ex_both) // a.batch_size * a.batch_size
    why = (f"probe: {n_p} examples, {1e3 * per_ex:.1f} ms per example (teacher + CA-LoRA), {fixed:.0f} s fixed; "
           f"{left_s:.0f} s left, {a.margin_s:.0f} s margin")
    if n >= split:
        return None, why + f": the whole split ({split}) fits"
    if n < a.batch_size:
        raise SystemExit(f"[gpu] --budget-s {a.budget_s}: no training fits after the probe ({why})")
    return n, why + f": {n} of {split} examples fit"


def _tf32() -> bool:
    return os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE") == "1"


def _row(name: str, m: dict, seconds: float | None, steps: int | None, n: int, tokens: int) -> dict:
    return {"model": name, "validation": m["validation"], "test": m["test"], "train_seconds": seconds,
            "train_steps": steps, "examples_per_s": round(n / seconds, 1) if seconds else None,
            "tokens_per_s": round(tokens / seconds) if seconds else None}


def _markdown(rec: dict) -> str:
    head = ["| model | val ppl | test ppl | test NLL | train s | steps | examples/s | tokens/s |",
            "|---|---|---|---|---|---|---|---|"]
    rows = [f"| {r['model']} | {r['validation']['perplexity']:.2f} | {r['test']['perplexity']:.2f} | "
            f"{r['test']['nll']:.4f} | {r['train_seconds'] if r['train_seconds'] is not None else '-'} | "
            f"{r['train_steps'] if r['train_steps'] is not None else '-'} | {r['examples_per_s'] or '-'} | "
            f"{r['tokens_per_s'] or '-'} |" for r in rec["rows"]]
    lines = [f"# SmolLM2 at a GPU schedule: {rec['task']}", "", f"- command: `{rec['command']}`",
             f"- machine: {rec['machine']}; {rec['gpu']}", f"- date: {rec['date']} to {rec['finished']}",
             f"- training examples: {rec['train_examples']} of {rec['train_split']} ({rec['sizing']})",
             f"- schedule: {rec['schedule']}", "", *head, *rows, ""]
    if rec.get("nll_gap_recovered") is not None:
        lines.append(f"CA-LoRA recovers {100 * rec['nll_gap_recovered']:.0f}% of the test-NLL gap between "
                     "compressed + LoRA from scratch and the uncompressed teacher.")
    lines += [f"- {k}" for k in rec.get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("gpu_runs"))
    ap.add_argument("--results", type=Path, help="folder for the results (default: WORK/results)")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--task", default="movie_dialog")
    ap.add_argument("--compression", help="default: calora-train's")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-train-examples", help="N or all (default: all, or what --budget-s allows)")
    ap.add_argument("--max-eval-examples", default="all")
    ap.add_argument("--eval-generate-examples", type=int, default=64)
    ap.add_argument("--mixed-precision", default="no")
    ap.add_argument("--budget-s", type=float, help="fit the main run and the baseline into this many seconds")
    ap.add_argument("--probe-examples", type=int, default=640)
    ap.add_argument("--margin-s", type=float, default=60.0)
    a = ap.parse_args(argv)
    deadline = time.monotonic() + a.budget_s if a.budget_s else float("inf")
    steps = Steps(a.work)

    def left() -> float:
        return deadline - time.monotonic()

    def run(name: str, cmd: list[str]) -> None:
        steps.run(name, None, cmd, ok=(0,))
    results = a.results or a.work / "results"
    py = sys.executable
    rec = {**provenance("benchmarks.gpu_generative", argv), "task": a.task, "backbone": a.backbone}
    import torch

    rec["gpu"] = (f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}" if torch.cuda.is_available()
                  else f"no GPU, torch {torch.__version__}")
    run("convert", [py, "-c", f"from calora.train.backbones import resolve; print(resolve({a.backbone!r}))"])
    train_split = _train_split(a.task)
    split = len(train_split.prompts)
    notes: list[str] = []
    if a.max_train_examples is not None:
        n, sizing = (None if a.max_train_examples == "all" else int(a.max_train_examples)), "--max-train-examples"
    elif a.budget_s:
        probe_dir = a.work / "probe"
        run("probe", [py, "-m", "calora.train.cli", *_train_args(a, min(a.probe_examples, split)),
                            "--max-eval-examples", "64", "--eval-generate-examples", "8", "--out", str(probe_dir)])
        probe = json.loads((probe_dir / a.task / "calora" / "metrics.json").read_text())
        n, sizing = _choose(a, left(), split, probe, steps.seconds["probe"])
        rec["probe"] = {"examples": min(a.probe_examples, split), "wall_s": steps.seconds["probe"],
                        "teacher_train_s": probe["teacher"]["train_seconds"], "calora_train_s": probe["train_seconds"]}
    else:
        n, sizing = None, "the whole split"
    runs = a.work / "runs"
    run("train", [py, "-m", "calora.train.cli", *_train_args(a, n), "--out", str(runs)])
    n_used = split if n is None else min(n, split)
    tokens = _tokens(a, train_split, n_used)
    main_m = json.loads((runs / a.task / "calora" / "metrics.json").read_text())
    t = main_m["teacher"]
    rows = [_row("uncompressed + LoRA (teacher)", t, t["train_seconds"], t["train_steps"], n_used, tokens),
            _row("compressed + CA-LoRA", main_m["student"], main_m["train_seconds"], main_m["train_steps"], n_used,
                 tokens)]
    if main_m.get("inherited_untrained"):
        rows.insert(1, _row("compressed + inherited LoRA, untrained", main_m["inherited_untrained"], None, None,
                            n_used, tokens))
    # the baseline pays the fixed cost again (load, compress, evaluate); its LoRA step is taken as the
    # CA-LoRA step, an upper bound (no teacher forward, no recovery branches)
    fixed = steps.seconds["train"] - t["train_seconds"] - main_m["train_seconds"]
    if left() > fixed + main_m["train_seconds"] + a.margin_s / 2:
        run("baseline", [py, "-m", "calora.train.ablation", *_train_args(a, n), "--out", str(a.work / "ablation"),
                               "--teacher", str(runs / a.task / "teacher"), "--results", str(results),
                               "--seeds", "0", "--variants", SCRATCH])
        abl = json.loads(next(results.glob(f"ablation_*{a.task}*.json")).read_text())
        for r in abl["runs"]:
            rows.insert(1, _row(SCRATCH, r["student"], r["train_seconds"], r["train_steps"], n_used, tokens))
    else:
        notes.append(f"baseline skipped: {left():.0f} s of the budget left, too few for another run")
    by = {r["model"]: r["test"]["nll"] for r in rows}
    gap = by.get(SCRATCH, 0) - by["uncompressed + LoRA (teacher)"]
    rec.update(finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"), train_split=split, train_examples=n_used,
               train_tokens=tokens, sizing=sizing, rows=rows, step_seconds=steps.seconds, notes=notes,
               schedule=f"{a.epochs:g} epoch(s), batch {a.batch_size}, AdamW lr {a.lr}, max length 96, "
                        f"mixed precision {a.mixed_precision}"
                        f"{' (fp32 matmuls as TF32: TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1)' if _tf32() else ''}, "
                        "seed 0; evaluation on "
                        f"{a.max_eval_examples} held-out examples per split",
               compression=main_m["compression"],
               nll_gap_recovered=(by[SCRATCH] - by["compressed + CA-LoRA"]) / gap if SCRATCH in by and gap > 0 else None)
    write_results(results / f"gpu_generative_{a.task}.json", rec)
    (results / f"gpu_generative_{a.task}.md").write_text(_markdown(rec))
    print(_markdown(rec), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
