"""What every benchmark results file carries: how it was produced (command, machine, date)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
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


class Steps:
    """Each step of a benchmark run as its own process, logged to ``WORK/logs/<step>.log``, with its
    wall time in ``WORK/logs/steps.json`` and in `seconds`."""

    def __init__(self, work: Path) -> None:
        self.work, self.logs, self.seconds = work, work / "logs", {}
        self.logs.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, done: Path | None, cmd: list[str], ok: tuple[int, ...] = (0, 1)) -> int:
        """Run `cmd` unless `done` exists; an exit code outside `ok` stops the run (by default a
        failing parity check, exit 1, is a result, not a crash)."""
        if done is not None and done.exists():
            print(f"[bench] {name}: done before ({done})", flush=True)
            return 0
        print(f"[bench] {name}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        with (self.logs / f"{name}.log").open("w") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        seconds = self.seconds[name] = round(time.perf_counter() - start, 1)
        print(f"[bench] {name}: exit {rc} after {seconds:.0f} s", flush=True)
        record = self.logs / "steps.json"
        times = json.loads(record.read_text()) if record.is_file() else {}
        times[name] = {"seconds": seconds, "exit": rc, "command": cmd,
                       "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        record.write_text(json.dumps(times, indent=2) + "\n")
        if rc not in ok:
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"[bench] {name} failed (exit {rc}); see {self.logs / (name + '.log')}:\n{tail}")
        return rc


def teacher_key(task_dir: Path, config: dict) -> str:
    """A short digest of the backbone source and the teacher LoRA's files: the cache key of a
    do-it-yourself model built from them, so a cached alternative is never reused for another
    backbone or a retrained teacher (the same task name on MiniLM and SmolLM2 shares a work folder)."""
    import hashlib

    from calora.validate.references import teacher_dir

    h = hashlib.sha256(str(config["backbone"]["source"]).encode())
    folder = teacher_dir(task_dir, config)
    # A missing folder hashes nothing: building the alternative then stops with the teacher's own
    # clear error (References.teacher) instead of a traceback here.
    for f in sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else ():
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]
