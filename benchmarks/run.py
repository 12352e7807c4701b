"""One command for the benchmarks behind docs/RESULTS.md: train, export, validate, time, plot.

    python -m benchmarks.run --profile quick --work bench_runs     # 2 CPU cores
    python -m benchmarks.run --profile full --work bench_runs      # a GPU host: every task, 3 seeds

Every step is a calora CLI or a benchmark script run as its own process (so each runtime is timed
alone), logged to ``WORK/logs/<step>.log`` with its wall time in ``WORK/logs/steps.json``; a step
whose output already exists is skipped, so an interrupted run resumes where it stopped. Results
files (JSON + Markdown, each saying the command, machine and date) go to ``WORK/results``; figures
to ``WORK/figures``. Run nothing else meanwhile: on a shared machine timings are noise (see
benchmarks/README.md).

Profiles:
- ``quick``: MiniLM on rotten_tomatoes and sms_spam at two compression levels (the default 4.7x
  and the 6.1x ``int4:g32+sparse:0.5+emb:int4``), rows teacher / CA-LoRA / LoRA from scratch /
  LoftQ-initialised LoRA, one seed; ONNX Runtime and ExecuTorch bundles (baked, and swappable with
  both tasks on one backbone; ExecuTorch also ``--mode shared``, one ``backbone.ptd`` and a program
  per task) validated on both tasks' full test splits; batch-1 latency (each
  runtime's default threads and 1 thread), size and accuracy against the merged-fp32 +
  quantize_dynamic alternative (and beside it converted to .ort as calora converts its bundles; and
  rotten_tomatoes trained for ONNX Runtime's int8 kernels, ``int8+act:tensor+sparse:0.5+emb:int4``
  and, with half of every FFN pruned, ``int8+act:tensor+ffn:0.5+emb:int4`` at 2 epochs, each
  exported to ONNX baked and swappable); task switch against a model reload; CA-LoRA's training-step cost;
  the training stage under ``accelerate launch --num_processes 2`` against one process; SmolLM2-135M
  on movie_dialog (320 training examples), ONNX Runtime baked and swappable (and baked with
  ``--activations int8``) and ExecuTorch swappable and shared bundles (shared with its float32 and its int8 adapter; the int8 export
  takes about 28 min) validated on 8 held-out prompts, prefill/decode tokens per second, and an
  ExecuTorch profile (ETDump) of the generative program, and what opening a task costs in each
  ExecuTorch layout (``benchmarks.gen_load``).
- ``full``: the same for rotten_tomatoes, sms_spam and question_type with seeds 0 1 2 and the three
  single ablations, plus Core ML bundles; the generative task on its whole training split
  (``benchmarks.gpu_generative``: teacher, CA-LoRA and LoRA from scratch, batch 32, with training
  throughput), all nine generative bundles (three targets baked and swappable, ONNX Runtime baked
  with int8 activations, ExecuTorch shared with a float32 and with an int8 adapter),
  full validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from benchmarks.common import Steps

LEVELS = {"4.7x": "int4:g32+sparse:0.5+emb:int8", "6.1x": "int4:g32+sparse:0.5+emb:int4"}
#: The x86 routes: int8 weights trained against ONNX Runtime's per-tensor int8 activations, so that
#: the ONNX bundles run on its int8 kernels (VNNI/AMX) and still pass parity; ONNX Runtime only.
#: level -> (spec, extra calora-train flags). The second prunes half of every FFN (the layers really
#: shrink), trained 2 epochs as chosen on validation (docs/results/2026-12-07/ffn-pruning/): the
#: route whose bundles ran at the alternative's speed (RESULTS.md section 3).
ORT_INT8 = {"4.5x-ort-int8": ("int8+act:tensor+sparse:0.5+emb:int4", ()),
            "5.9x-ort-int8-ffn": ("int8+act:tensor+ffn:0.5+emb:int4", ("--epochs", "2"))}
BASELINES = ["compressed + LoRA from scratch", "compressed + LoftQ-initialised LoRA"]
ABLATIONS = ["CA-LoRA without inherit", "CA-LoRA without recover", "CA-LoRA without distill"]


GEN_TASK = "movie_dialog"


@dataclasses.dataclass(frozen=True)
class Profile:
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    variants: tuple[str, ...]
    targets: tuple[str, ...]
    rounds: int
    #: generative bundles (target, mode, --adapter-dtype or None for the mode's default, --activations
    #: or None for the target's own) of GEN_TASK on SmolLM2-135M
    gen_bundles: tuple[tuple[str, str, str | None, str | None], ...]
    #: training examples of the generative task (None: the whole split)
    gen_train_examples: int | None
    #: held-out prompts per generative validation (None: calora-validate's default)
    gen_validate_examples: int | None


PROFILES = {
    "quick": Profile(("rotten_tomatoes", "sms_spam"), (0,), tuple(BASELINES), ("onnx", "executorch"), 5,
                     (("onnx", "baked", None, None), ("onnx", "swappable", None, None),
                      ("onnx", "baked", None, "int8"), ("executorch", "swappable", None, None),
                      ("executorch", "shared", None, None), ("executorch", "shared", "int8", None)), 320, 8),
    "full": Profile(("rotten_tomatoes", "sms_spam", "question_type"), (0, 1, 2),
                    (*BASELINES, "compressed + CA-LoRA", *ABLATIONS), ("onnx", "executorch", "coreml"), 7,
                    (*((t, m, None, None) for t in ("onnx", "executorch", "coreml") for m in ("baked", "swappable")),
                     ("onnx", "baked", None, "int8"), ("executorch", "shared", None, None),
                     ("executorch", "shared", "int8", None)),
                    None, None),
}


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))



def _generative(steps: Steps, prof: Profile, work: Path, results: Path) -> tuple[list[Path], Path]:
    """SmolLM2-135M on movie_dialog: trained (quick: 320 training and 200 evaluation examples, the
    2-core schedule of README's generative section; full: the whole training split through
    `benchmarks.gpu_generative`, with LoRA from scratch and training throughput), exported per
    generative target and mode, and validated on held-out prompts; returns the bundles for the
    decode benchmark and the runs folder."""
    if prof.gen_train_examples:
        runs = work / "runs-gen"
        steps.run("train-gen", runs / GEN_TASK / "calora" / "metrics.json",
                  [_bin("calora-train"), "--backbone", "smollm2-135m", "--task", GEN_TASK, "--out", str(runs),
                   "--batch-size", "8", "--max-train-examples", str(prof.gen_train_examples),
                   "--max-eval-examples", "200"])
    else:
        gen = work / "gen-full"
        runs = gen / "runs"
        steps.run("train-gen", results / f"gpu_generative_{GEN_TASK}.json",
                  [sys.executable, "-m", "benchmarks.gpu_generative", "--task", GEN_TASK, "--work", str(gen),
                   "--results", str(results)])
    bundles = []
    for target, mode, dtype, acts in prof.gen_bundles:
        name = f"{target}-{mode}" + (f"-{dtype}" if dtype else "") + (f"-{acts}act" if acts else "")
        b = work / "bundles-gen" / name
        steps.run(f"export-gen-{name}", b / "manifest.json",
                  [_bin("calora-export"), "--target", target, "--mode", mode, "--task", GEN_TASK,
                   "--runs", str(runs), "--out", str(b), *(["--adapter-dtype", dtype] if dtype else []),
                   *(["--activations", acts] if acts else [])])
        report = results / f"parity-gen-{name}"
        steps.run(f"validate-gen-{name}", report,
                  [_bin("calora-validate"), str(b), "--runs", str(runs), "--report", str(report),
                   *(["--max-examples", str(prof.gen_validate_examples)] if prof.gen_validate_examples else [])])
        if target != "coreml":  # no Core ML runtime on Linux: validated at program level, not timed
            bundles.append(b)
    return bundles, runs


def _ort_int8(steps: Steps, work: Path, results: Path, task: str) -> list[Path]:
    """The first task trained for ONNX Runtime's int8 kernels on each `ORT_INT8` route (same
    teacher), exported baked and swappable and validated; returns the bundles for the latency step."""
    bundles = []
    for level, (spec, flags) in ORT_INT8.items():
        runs = work / f"runs-{level}"
        steps.run(f"train-{task}-{level}", runs / task / "calora" / "metrics.json",
                  [_bin("calora-train"), "--task", task, "--compression", spec, "--out", str(runs),
                   "--teacher", str(work / "runs-4.7x" / task / "teacher"), *flags])
        for mode in ("baked", "swappable"):
            b = work / f"bundles-{level}" / f"onnx-{mode}"
            steps.run(f"export-{level}-onnx-{mode}", b / "manifest.json",
                      [_bin("calora-export"), "--target", "onnx", "--mode", mode, "--task", task, "--runs", str(runs),
                       "--out", str(b)])
            report = results / f"parity-{level}-onnx-{mode}"
            steps.run(f"validate-{level}-onnx-{mode}", report,
                      [_bin("calora-validate"), str(b), "--runs", str(runs), "--report", str(report)])
            bundles.append(b)
    return bundles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=list(PROFILES), default="quick")
    ap.add_argument("--work", type=Path, default=Path("bench_runs"))
    args = ap.parse_args(argv)
    prof, work = PROFILES[args.profile], args.work
    steps = Steps(work)
    results, figures = work / "results", work / "figures"
    tasks = ",".join(prof.tasks)
    latency_bundles: list[Path] = []
    switch_pairs: list[str] = []
    # Training first (every level and task), then lowering and validation, then the timed benchmarks:
    # the timings run last, alone, and a change to the export code only redoes the later steps.
    for level, spec in LEVELS.items():
        runs = work / f"runs-{level}"
        for task in prof.tasks:
            teacher = work / "runs-4.7x" / task / "teacher"
            cmd = [_bin("calora-train"), "--task", task, "--compression", spec, "--out", str(runs)]
            if level != "4.7x":
                cmd += ["--teacher", str(teacher)]  # the same teacher at every level
            steps.run(f"train-{task}-{level}", runs / task / "calora" / "metrics.json", cmd)
            stem = results / f"ablation-{task}-{level}"
            steps.run(f"ablation-{task}-{level}", stem.with_suffix(".done"),
                      [sys.executable, "-m", "calora.train.ablation", "--task", task, "--compression", spec,
                       "--teacher", str(teacher), "--out", str(work / f"ablation-{level}"), "--results", str(results),
                       "--seeds", *map(str, prof.seeds), "--variants", *prof.variants])
            stem.with_suffix(".done").parent.mkdir(parents=True, exist_ok=True)
            stem.with_suffix(".done").touch()
    first = prof.tasks[0]
    # The training stage in two processes (per-process batch halved: the same 32 rows per step) against
    # the single-process run of the same teacher and level.
    two = work / "runs-2proc"
    steps.run("train-2proc", two / first / "calora" / "metrics.json",
              [_bin("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", _bin("calora-train"), "--task", first,
               "--compression", LEVELS["4.7x"], "--teacher", str(work / "runs-4.7x" / first / "teacher"),
               "--batch-size", "16", "--out", str(two)])
    for level in LEVELS:
        runs = work / f"runs-{level}"
        for target in prof.targets:
            pair = []
            # every task in one bundle: swappable and shared (ExecuTorch) keep one backbone for all of them
            for mode in ("baked", "swappable", *(("shared",) if target == "executorch" else ())):
                b = work / f"bundles-{level}" / f"{target}-{mode}"
                steps.run(f"export-{level}-{target}-{mode}", b / "manifest.json",
                          [_bin("calora-export"), "--target", target, "--mode", mode, "--task", tasks,
                           "--runs", str(runs), "--out", str(b)])
                steps.run(f"validate-{level}-{target}-{mode}", results / f"parity-{level}-{target}-{mode}",
                          [_bin("calora-validate"), str(b), "--runs", str(runs), "--report",
                           str(results / f"parity-{level}-{target}-{mode}")])
                pair.append(b)
                if target != "coreml":
                    latency_bundles.append(b)
            if level == "4.7x" and target != "coreml" and len(prof.tasks) > 1:
                switch_pairs += ["--baked", str(pair[0]), "--swappable", str(pair[1])]
                switch_pairs += ["--shared", str(pair[2])] if len(pair) > 2 else []  # timed beside its pair
    latency_bundles += _ort_int8(steps, work, results, first)
    gen_bundles, gen_runs = _generative(steps, prof, work, results)
    latency = results / f"classify_latency_{first}.json"
    steps.run("latency", latency,
              [sys.executable, "-m", "benchmarks.classify_latency", "--runs", str(work / "runs-4.7x"),
               "--task", first, "--bundles", *map(str, latency_bundles), "--threads", "1", "--unfused-alternative",
               "--rounds", str(prof.rounds), "--work", str(work / "latency-work"), "--out", str(latency)])
    if switch_pairs:
        steps.run("task-switch", results / "task_switch.json",
                  [sys.executable, "-m", "benchmarks.task_switch", *switch_pairs, "--runs", str(work / "runs-4.7x"),
                   "--rounds", str(prof.rounds), "--work", str(work / "latency-work"),
                   "--out", str(results / "task_switch.json")])
    gen_decode = results / f"gen_decode_{GEN_TASK}.json"
    steps.run("gen-decode", gen_decode,
              [sys.executable, "-m", "benchmarks.gen_decode", "--bundles", *map(str, gen_bundles), "--runs",
               str(gen_runs), "--task", GEN_TASK, "--prompts", "4", "--new-tokens", "16", "--rounds", "3",
               "--work", str(work / "gen-alternative"), "--out", str(gen_decode),
               # every runtime at the machine's core count: their defaults differ (og ran one thread)
               "--threads", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                else os.cpu_count() or 1)])  # sched_getaffinity: Linux only
    et_gen = [b for b in gen_bundles if b.name.startswith("executorch")]
    profiled = [b for b in et_gen if b.name == "executorch-swappable"] or et_gen
    if profiled:
        steps.run("et-profile", results / f"et_profile_{GEN_TASK}.json",
                  [sys.executable, "-m", "benchmarks.et_profile", str(profiled[-1]), "--task", GEN_TASK,
                   "--out", str(results / f"et_profile_{GEN_TASK}.json")])
    if len(et_gen) > 1:  # what opening (switching to) a task costs in each ExecuTorch layout
        steps.run("gen-load", results / f"gen_load_{GEN_TASK}.json",
                  [sys.executable, "-m", "benchmarks.gen_load", "--bundles", *map(str, et_gen), "--task", GEN_TASK,
                   "--out", str(results / f"gen_load_{GEN_TASK}.json")])
    steps.run("train-step", results / f"train_step_{first}.json",
              [sys.executable, "-m", "benchmarks.train_step", "--runs", str(work / "runs-4.7x"), "--task", first,
               "--rounds", "3", "--out", str(results / f"train_step_{first}.json")])
    # the generative step too: its teacher pass is the larger share (SmolLM2 steps take seconds on CPU)
    steps.run("train-step-gen", results / f"train_step_{GEN_TASK}.json",
              [sys.executable, "-m", "benchmarks.train_step", "--runs", str(gen_runs), "--task", GEN_TASK,
               "--steps", "4", "--warmup", "1", "--rounds", "3", "--out", str(results / f"train_step_{GEN_TASK}.json")])
    abl_json = sorted(str(p) for p in results.glob("ablation_*.json"))
    extra = (["--task-switch", str(results / "task_switch.json")] if switch_pairs else []) + \
        ["--train-step", str(results / f"train_step_{first}.json"), str(results / f"train_step_{GEN_TASK}.json"),
         "--decode", str(gen_decode)]
    steps.run("plots", figures / ".done", [sys.executable, "-m", "benchmarks.plots", "--out", str(figures),
                                            "--ablation", *abl_json, "--latency", str(latency), *extra])
    print(f"[bench] results in {results}, figures in {figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
