"""`calora-validate`: thin CLI over `calora.validate` (parse, build the config, validate, report).

Exit codes: 0 every check passed; 1 a parity check failed (each failure is printed); 2 bad input
(missing bundle, unknown task or threshold, unreadable data).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from calora.train.errors import CaloraError

from .thresholds import FIELDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calora-validate",
        description="Run each bundle's artifacts in their own runtime on the tasks' real evaluation data and check "
                    "parity with the PyTorch references. Exit 0 only when every check passes.")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle directories written by calora-export")
    p.add_argument("--task", help="validate only these tasks (comma-separated; default: every task in the bundle)")
    p.add_argument("--data", action="append", default=[], metavar="[TASK=]FILE",
                   help="evaluation data (CSV/TSV/JSONL with text,label[,split], or an SST-2 folder) for TASK; its "
                        "test split is used. Default: the data each task was trained on")
    p.add_argument("--report", metavar="DIR", help="write report.json, report.md and report.html into DIR")
    p.add_argument("--max-examples", type=int, metavar="N", help="evaluate the first N test examples per task")
    p.add_argument("--runs", metavar="DIR", help="where calora-train wrote the tasks (the PyTorch references); "
                   "default: the directories recorded in the manifest, then calora_runs/")
    p.add_argument("--threshold", action="append", default=[], metavar="[TARGET.]KEY=VALUE",
                   help=f"override a threshold for all targets or one target; keys: {', '.join(FIELDS)}")
    p.add_argument("--thresholds", metavar="FILE.json", help='thresholds file: {"*" or TARGET: {KEY: VALUE}}')
    p.add_argument("--record", action="store_true", help="write the outcome into each bundle's manifest.json")
    return p


def _data(items: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        task, sep, path = item.partition("=")
        out.append((task, path) if sep and task and not task.startswith(("/", ".")) else ("*", item))
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checks import ParityError
    from .core import ValidateConfig, validate
    from .report import markdown, write

    argv = sys.argv[1:] if argv is None else argv
    try:
        config = ValidateConfig(
            bundles=tuple(args.bundles), tasks=tuple(t.strip() for t in (args.task or "").split(",") if t.strip()),
            data=_data(args.data), max_examples=args.max_examples, runs=args.runs,
            threshold_flags=tuple(args.threshold), threshold_file=args.thresholds, record=args.record)
        report = validate(config, command="calora-validate " + shlex.join(argv))
    except CaloraError as exc:
        print(f"calora-validate: error: {exc}", file=sys.stderr)
        return 2
    if args.report:
        paths = write(report, args.report)
        print(f"[calora] report: {', '.join(str(p) for p in paths.values())}")
    else:
        print(markdown(report))
    try:
        report.raise_for_failures()
    except ParityError as exc:
        print(f"calora-validate: {exc}", file=sys.stderr)
        return 1
    print(f"[calora] parity passed: {len(report.checks)} checks"
          + (f" ({len(report.skipped)} skipped, see the report)" if report.skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
