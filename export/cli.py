"""`calora-export`: thin CLI over `calora.export` (parse, load the job, call the target)."""

from __future__ import annotations

import argparse
import json
import sys

from calora.targets import TARGETS
from calora.targets.base import Mode
from calora.train.errors import CaloraError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calora-export",
        description="Lower the compressed backbone plus trained task adapters to a mobile runtime and write a "
                    "bundle (artifacts, per-task adapters, tokenizer, manifest.json, README.md).")
    p.add_argument("--target", required=True, choices=list(TARGETS), help="runtime to export to")
    p.add_argument("--task", required=True,
                   help="trained task name(s), comma-separated, e.g. rotten_tomatoes,sms_spam")
    p.add_argument("--mode", default=Mode.BAKED.value, choices=[m.value for m in Mode],
                   help="baked: one artifact per task; swappable: one shared backbone + a small adapter per task "
                        "(default: %(default)s)")
    p.add_argument("--runs", default="calora_runs", help="where calora-train wrote the tasks (default: %(default)s)")
    p.add_argument("--out", help="bundle directory (default: bundles/TARGET-MODE)")
    p.add_argument("--max-length", type=int, help="sequence length of the exported inputs (default: as trained)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    out = args.out or f"bundles/{args.target}-{args.mode}"
    try:
        from calora.targets import get_target

        target = get_target(args.target)
        if Mode(args.mode) not in target.modes:  # refuse before any model is loaded
            raise CaloraError(f"--mode {args.mode}: target {args.target} supports "
                              f"{', '.join(sorted(m.value for m in target.modes))}")
        from .bundle import export_bundle
        from .job import load_job

        job = load_job(args.runs, tasks, args.mode, args.max_length)
        manifest = export_bundle(job, args.target, out, argv)
    except CaloraError as exc:
        print(f"calora-export: error: {exc}", file=sys.stderr)
        return 2
    print(f"[calora] wrote {out} ({args.target}, {args.mode}, tasks: {', '.join(tasks)})")
    for task in manifest["tasks"]:
        print(f"  {task['name']}: smoke {json.dumps(task['smoke'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
