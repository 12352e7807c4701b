"""Export trained tasks to every registered target in every mode and tabulate sizes and times.

    python -m calora.export.matrix --runs calora_runs --task rotten_tomatoes,sms_spam \
        --bundles bundles --results export/results

Writes one bundle per (target, mode) under `--bundles`, and `export_matrix.{json,md}` under
`--results` with, per target and mode: shared backbone artifact size, per-task artifact/adapter
sizes, export wall time, and the smoke comparison against PyTorch, plus command, machine, date.
A target that fails is recorded with its error, not dropped.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from calora.targets import TARGETS, get_target
from calora.targets.base import Mode
from calora.train.errors import CaloraError

from .bundle import export_bundle
from .job import load_job


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calora.export.matrix")
    p.add_argument("--runs", default="calora_runs")
    p.add_argument("--task", required=True)
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--modes", default=",".join(m.value for m in Mode))
    p.add_argument("--bundles", default="bundles")
    p.add_argument("--results", default="export/results")
    args = p.parse_args(argv)
    tasks = args.task.split(",")
    command = "python -m calora.export.matrix " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rows = []
    for mode in args.modes.split(","):
        job = load_job(args.runs, tasks, mode)
        for target in args.targets.split(","):
            if Mode(mode) not in get_target(target).modes:
                rows.append({"target": target, "mode": mode, "error": "mode not supported"})
                continue
            out = Path(args.bundles) / f"{target}-{mode}"
            print(f"[matrix] {target} {mode} -> {out}", flush=True)
            t0 = time.perf_counter()
            try:
                manifest = export_bundle(job, target, out, ["--target", target, "--task", args.task, "--mode", mode,
                                                            "--runs", args.runs, "--out", str(out)])
            except (CaloraError, RuntimeError, ValueError, NotImplementedError) as exc:
                rows.append({"target": target, "mode": mode, "error": f"{type(exc).__name__}: {exc}"[:500]})
                continue
            rows.append({"target": target, "mode": mode, "seconds": round(time.perf_counter() - t0, 1),
                         "backbone_files": manifest["backbone"]["files"],
                         "task_files": {t["name"]: t["files"] for t in manifest["tasks"]},
                         "smoke": {t["name"]: t["smoke"] for t in manifest["tasks"]},
                         "weight_error": manifest["weight_error"], "runtime": manifest["runtime"]})
    machine = f"{platform.machine()} CPU x{torch.get_num_threads()} threads, {platform.system()}"
    record = {"command": command, "machine": machine, "started": started,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "tasks": tasks, "rows": rows}
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / "export_matrix.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# Export matrix: {', '.join(tasks)}", "", f"- command: `{command}`", f"- machine: {machine}",
             f"- date: {started} to {record['finished']}", "- sizes in MB (10^6 bytes); smoke = artifact in its "
             "runtime vs the PyTorch model on real test texts (max |logit error| / argmax agreement)", "",
             "| target | mode | export s | shared backbone | per task | smoke |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['target']} | {r['mode']} | - | - | - | failed: {r['error'][:120]} |")
            continue
        shared = " + ".join(f"{Path(f['path']).name} {_mb(f['bytes'])}" for f in r["backbone_files"]) or "-"
        per_task = "; ".join(f"{t}: " + " + ".join(f"{Path(f['path']).name} {_mb(f['bytes'])}" for f in fs)
                             for t, fs in r["task_files"].items())
        smoke = "; ".join(f"{t}: " + (f"{s['max_abs_logit_error']:.3g} / {s['argmax_agreement']:.2f}"
                                      if s and "max_abs_logit_error" in s else f"skipped ({(s or {}).get('skipped')})")
                          for t, s in r["smoke"].items())
        lines.append(f"| {r['target']} | {r['mode']} | {r['seconds']} | {shared} | {per_task} | {smoke} |")
    (res / "export_matrix.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
