"""One command for the benchmarks behind docs/RESULTS.md: train, export, validate, time, plot.

    python -m benchmarks.run --profile quick --work bench_runs     # 2 CPU cores
    python -m benchmarks.run --profile full --work bench_runs      # a GPU host: every task, 3 seeds

The quick profile's steps took about 55 minutes together on 2 CPU cores when run one by one
(docs/results/README.md); the script itself has not been timed end to end.

Every step is a calora CLI or a benchmark script run as its own process (so each runtime is timed
alone), logged to ``WORK/logs/<step>.log``; a step whose output already exists is skipped, so an
interrupted run resumes where it stopped. Results files (JSON + Markdown, each saying the command,
machine and date) go to ``WORK/results``; figures to ``WORK/figures``. Run nothing else meanwhile:
on a shared machine timings are noise (see benchmarks/README.md).

Profiles:
- ``quick``: MiniLM on rotten_tomatoes at two compression levels (the default 4.7x and the 6.1x
  ``int4:g32+sparse:0.5+emb:int4``), rows teacher / CA-LoRA / LoRA from scratch / LoftQ-initialised
  LoRA, one seed; ONNX Runtime and ExecuTorch bundles (baked and swappable) validated; batch-1
  latency, size and accuracy against the merged-fp32 + quantize_dynamic alternative.
- ``full``: the same for rotten_tomatoes, sms_spam and question_type with seeds 0 1 2 and the three
  single ablations, plus Core ML bundles.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

LEVELS = {"4.7x": "int4:g32+sparse:0.5+emb:int8", "6.1x": "int4:g32+sparse:0.5+emb:int4"}
BASELINES = ["compressed + LoRA from scratch", "compressed + LoftQ-initialised LoRA"]
ABLATIONS = ["CA-LoRA without inherit", "CA-LoRA without recover", "CA-LoRA without distill"]


@dataclasses.dataclass(frozen=True)
class Profile:
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    variants: tuple[str, ...]
    targets: tuple[str, ...]
    rounds: int


PROFILES = {
    "quick": Profile(("rotten_tomatoes",), (0,), tuple(BASELINES), ("onnx", "executorch"), 5),
    "full": Profile(("rotten_tomatoes", "sms_spam", "question_type"), (0, 1, 2),
                    (*BASELINES, "compressed + CA-LoRA", *ABLATIONS), ("onnx", "executorch", "coreml"), 7),
}


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


class Steps:
    def __init__(self, work: Path) -> None:
        self.work, self.logs = work, work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, done: Path, cmd: list[str], check: bool = True) -> int:
        """Run `cmd` unless `done` exists; a failing parity check (exit 1) is a result, not a crash."""
        if done.exists():
            print(f"[bench] {name}: done before ({done})", flush=True)
            return 0
        print(f"[bench] {name}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        with (self.logs / f"{name}.log").open("w") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        print(f"[bench] {name}: exit {rc} after {time.perf_counter() - start:.0f} s", flush=True)
        if check and rc not in (0, 1):
            raise SystemExit(f"[bench] {name} failed (exit {rc}); see {self.logs / (name + '.log')}")
        return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=list(PROFILES), default="quick")
    ap.add_argument("--work", type=Path, default=Path("bench_runs"))
    args = ap.parse_args(argv)
    prof, work = PROFILES[args.profile], args.work
    steps = Steps(work)
    results, figures = work / "results", work / "figures"
    ablations, bundles = [], []
    for task in prof.tasks:
        for level, spec in LEVELS.items():
            runs = work / f"runs-{level}"
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
            ablations.append(stem)
            for target in prof.targets:
                for mode in ("baked", "swappable"):
                    b = work / f"bundles-{level}" / f"{task}-{target}-{mode}"
                    steps.run(f"export-{task}-{level}-{target}-{mode}", b / "manifest.json",
                              [_bin("calora-export"), "--target", target, "--mode", mode, "--task", task,
                               "--runs", str(runs), "--out", str(b)])
                    steps.run(f"validate-{task}-{level}-{target}-{mode}", results / f"parity-{b.name}-{level}",
                              [_bin("calora-validate"), str(b), "--runs", str(runs), "--report",
                               str(results / f"parity-{b.name}-{level}")])
                    if level == "4.7x" and task == "rotten_tomatoes" and target != "coreml":
                        bundles.append(b)
    latency = results / "classify_latency_rotten_tomatoes.json"
    steps.run("latency", latency,
              [sys.executable, "-m", "benchmarks.classify_latency", "--runs", str(work / "runs-4.7x"),
               "--task", "rotten_tomatoes", "--bundles", *map(str, bundles),
               "--rounds", str(prof.rounds), "--work", str(work / "latency-work"), "--out", str(latency)])
    abl_json = sorted(str(p) for p in results.glob("ablation_*.json"))
    steps.run("plots", figures / ".done", [sys.executable, "-m", "benchmarks.plots", "--out", str(figures),
                                            "--ablation", *abl_json, "--latency", str(latency)])
    print(f"[bench] results in {results}, figures in {figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
