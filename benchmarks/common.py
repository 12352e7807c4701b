"""What every benchmark results file carries: how it was produced (command, machine, date)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path


def provenance(module: str, argv: list[str] | None) -> dict:
    """The command line (as `python -m <module> ...`), the date and the machine of this run."""
    args = sys.argv[1:] if argv is None else argv
    return {"command": f"python -m {module} " + " ".join(map(str, args)),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.machine()} {platform.processor() or ''} x{os.cpu_count()} cores".strip()}


def write_results(path: Path | None, record: dict) -> None:
    """The results file (JSON), if one was asked for."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
