"""`calora-validate`: thin CLI over `calora.validate` (parse, build the config, validate, report).

Exit codes: 0 every check passed; 1 a parity check failed (each failure is printed); 2 bad input
(missing bundle, unknown task or threshold, unreadable data, unwritable --report); 3 an internal
error (calora or a dependency crashed: not a parity verdict); 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from calora.train.cli_support import add_common_flags, run_cli

from .noise_floor import DEFAULT_EXAMPLES as NOISE_FLOOR_EXAMPLES
from .thresholds import FIELDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calora-validate",
        description="Run each bundle's artifacts in their own runtime on the tasks' real evaluation data and check "
                    "parity with the PyTorch references. Exit 0 only when every check passes.")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle directories written by calora-export")
    p.add_argument("--task", help="validate only these tasks (comma-separated; default: every task in the bundle)")
    p.add_argument("--data", action="append", default=[], metavar="[TASK=]FILE",
                   help="evaluation data (CSV/TSV/JSONL, or an SST-2 folder) for TASK. Rows used: those with "
                        "split=test if the file has a split column; the recorded test split if it is the file the "
                        "task was trained on; else every row (the report says which). Default: the data each task "
                        "was trained on")
    p.add_argument("--text-column", help="text column of --data (default: the column the task was trained with)")
    p.add_argument("--label-column", help="label column of --data (default: the column the task was trained with)")
    p.add_argument("--report", metavar="DIR", help="write report.json, report.md and report.html into DIR")
    p.add_argument("--overwrite", action="store_true", help="replace the calora report already in --report DIR")
    p.add_argument("--max-examples", type=int, metavar="N", help="evaluate the first N test examples per task")
    p.add_argument("--runs", metavar="DIR", help="where calora-train wrote the tasks (the PyTorch references); "
                   "default: the directories recorded in the manifest, then calora_runs/")
    p.add_argument("--threshold", action="append", default=[], metavar="[TARGET.]KEY=VALUE",
                   help=f"override a threshold for all targets or one target; keys: {', '.join(FIELDS)}")
    p.add_argument("--thresholds", metavar="FILE.json", help='thresholds file: {"*" or TARGET: {KEY: VALUE}}')
    p.add_argument("--record", action="store_true", help="write the outcome into each bundle's manifest.json")
    p.add_argument("--noise-floor-examples", type=int, default=NOISE_FLOOR_EXAMPLES, metavar="N",
                   help="where a value check fails, also run the PyTorch reference in float64 on the first N "
                        "evaluated texts and report how far it strays from the float32 reference, beside the "
                        "artifact's error on the same texts (a diagnosis: no gate moves; 0 = off; default "
                        "%(default)s)")
    add_common_flags(p)
    return p


def _data(items: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        task, sep, path = item.partition("=")
        out.append((task, path) if sep and task and not task.startswith(("/", ".")) else ("*", item))
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    """`calora-validate`; returns the exit code (0 pass, 1 parity failure, 2 bad input, 3 internal
    error, 130/143 interrupted)."""
    args = build_parser().parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv

    def body() -> int:
        from calora.train.errors import EXIT_PARITY
        from calora.train.outputs import OutputKind, check_output

        from .checks import ParityError
        from .core import ValidateConfig, validate
        from .report import markdown, write

        config = ValidateConfig(
            bundles=tuple(args.bundles), tasks=tuple(t.strip() for t in (args.task or "").split(",") if t.strip()),
            data=_data(args.data), max_examples=args.max_examples, runs=args.runs,
            threshold_flags=tuple(args.threshold), threshold_file=args.thresholds, record=args.record,
            text_column=args.text_column, label_column=args.label_column,
            noise_floor_examples=args.noise_floor_examples)
        if args.report:  # checked before minutes of validation, not after
            inputs = {f"BUNDLE {b}": b for b in args.bundles} | {"--runs": args.runs}
            inputs |= {f"--data {d}": d for _, d in config.data}
            check_output(args.report, OutputKind.REPORT, flag="--report", overwrite=args.overwrite, inputs=inputs)
        report = validate(config, command="calora-validate " + shlex.join(argv))
        if args.report:
            paths = write(report, args.report)
            print(f"[calora] report: {', '.join(str(p) for p in paths.values())}")
        else:
            print(markdown(report))
        try:
            report.raise_for_failures()
        except ParityError as exc:
            print(f"calora-validate: {exc}", file=sys.stderr)
            return EXIT_PARITY
        print(f"[calora] parity passed: {len(report.checks)} checks"
              + (f" ({len(report.skipped)} skipped, see the report)" if report.skipped else ""))
        return 0

    return run_cli("calora-validate", args, body)


if __name__ == "__main__":
    sys.exit(main())
