"""Where calora writes, and the rules that keep it from destroying anything it did not write.

Every folder calora produces (a trained task, an export bundle, a validation report) is one
*output* of a known `OutputKind`. The rules, applied by `check_output` before any long work starts:

- an output path that exists is replaced only if it is a calora output of the same kind *and* the
  user passed ``--overwrite``; anything else there (a user's folder, a file, another kind) is refused;
- an output is never the current directory, the root or home folder, an input, or a folder that
  holds an input (``--runs``, ``--data``, a bundle being validated ...);
- the place it goes must be writable: checked with a real probe (``os.access`` says yes to root
  even on a read-only mount), so a bad path fails in a second, not after minutes of work.

`AtomicDir` then builds the output under a hidden temporary name beside it and swaps it in at the
end: a failed, interrupted or killed run leaves the previous output untouched, and the leftovers of
a killed run (recognised by calora's own marker file, never by name alone) are swept next time.
"""

from __future__ import annotations

import enum
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import OutputPathError

#: Written into every output folder calora creates: what it is and which command wrote it.
MARKER = ".calora-output.json"
_TMP_TAG = ".calora-tmp-"
_OLD_TAG = ".calora-old-"
#: errno values that mean "the disk or the path will not take this write", not a calora bug.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                          errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG, errno.ENOENT})


class OutputKind(str, enum.Enum):
    TASK = "task"  # calora-train: the folder OUT/TASK
    MODEL = "model"  # calora-train: OUT/TASK/calora (CA-LoRA) or OUT/TASK/teacher
    BUNDLE = "bundle"  # calora-export: artifacts + manifest.json
    REPORT = "report"  # calora-validate --report: report.{json,md,html}


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def output_kind(path: Path) -> OutputKind | None:
    """The kind of calora output at `path` (a folder), or None if calora did not write it.

    The marker file decides; outputs written before markers existed are recognised by the one file
    each kind always had (a bundle's manifest.json, a task's calora_config.json, a report.json)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return None
    marker = _json(path / MARKER)
    if isinstance(marker, dict):
        try:
            return OutputKind(marker.get("kind"))
        except ValueError:
            return None
    manifest = _json(path / "manifest.json")
    if isinstance(manifest, dict) and {"schema_version", "target", "tasks"} <= set(manifest):
        return OutputKind.BUNDLE
    if (path / "calora" / "calora_config.json").is_file() or (path / "teacher" / "recipe.json").is_file():
        return OutputKind.TASK
    if (path / "calora_config.json").is_file() or (path / "recipe.json").is_file():
        return OutputKind.MODEL
    report = _json(path / "report.json")
    names = {p.name for p in path.iterdir()}
    if isinstance(report, dict) and {"bundles", "checks"} <= set(report) and names <= {
            "report.json", "report.md", "report.html"}:
        return OutputKind.REPORT
    return None


def write_marker(folder: Path, kind: OutputKind, command: str = "") -> None:
    (Path(folder) / MARKER).write_text(json.dumps({"kind": kind.value, "command": command}, sort_keys=True) + "\n")


@contextmanager
def removed_if_unused(folder: Path, enabled: bool = True) -> Iterator[None]:
    """Run the block; if it fails, remove again the folders up to `folder` that did not exist before
    it and still hold nothing but calora's marker. A flag refused once the model is loaded (an int4
    group the backbone's widths do not take) then leaves no empty output folder behind; a folder with
    anything else in it (a checkpoint, a saved teacher) is kept."""
    folder = Path(folder).expanduser().absolute()
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        if enabled:
            for p in created:
                try:
                    if not p.is_dir() or p.is_symlink() or {q.name for q in p.iterdir()} - {MARKER}:
                        break
                    (p / MARKER).unlink(missing_ok=True)
                    p.rmdir()
                except OSError:  # tidying must never hide the error that stopped the run
                    break
        raise


def _is_within(inner: Path, outer: Path) -> bool:
    """True when `inner` is `outer` or lies inside it (both resolved)."""
    return inner == outer or outer in inner.parents


def check_output(path: str | Path, kind: OutputKind, *, flag: str, overwrite: bool,
                 inputs: dict[str, str | Path] | None = None) -> Path:
    """Refuse an output path that would destroy what calora did not write (see the module
    docstring); return it as a Path. `inputs` maps a flag name to a path the run reads."""
    p = Path(path).expanduser()
    resolved = p.resolve()
    cwd = Path.cwd().resolve()
    if _is_within(cwd, resolved):
        raise OutputPathError(f"{flag} {path}: is the current directory or a folder above it; name a new folder "
                              f"for the {kind.value}")
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise OutputPathError(f"{flag} {path}: refusing to write a {kind.value} over {resolved}")
    for what, inp in (inputs or {}).items():
        if inp is None:
            continue
        ir = Path(inp).expanduser().resolve()
        if _is_within(ir, resolved):
            raise OutputPathError(f"{flag} {path}: would replace {what} {inp} (or the folder holding it); "
                                  "choose another output folder")
    if p.is_symlink() or (p.exists() and not p.is_dir()):
        raise OutputPathError(f"{flag} {path}: exists and is not a folder calora wrote; calora never overwrites "
                              "what it did not write")
    if p.exists():
        found = output_kind(p)
        if found is None and any(p.iterdir()):
            raise OutputPathError(f"{flag} {path}: exists and is not a calora {kind.value} (it holds other files); "
                                  "calora never overwrites what it did not write: choose a new path")
        if found is not None and found != kind:
            raise OutputPathError(f"{flag} {path}: is a calora {found.value}, not a {kind.value}; choose another path")
        if found is not None and not overwrite:
            raise OutputPathError(f"{flag} {path}: a calora {kind.value} is already there; pass --overwrite to "
                                  "replace it (the old one stays intact until the new one is complete)")
    ensure_writable(p.parent, flag)
    return p


def ensure_writable(folder: Path, flag: str) -> None:
    """Fail now, naming `flag`, if nothing can be created in `folder` (or the nearest existing
    folder above it): a regular file in the way, a read-only mount, no permission."""
    anc = Path(folder).expanduser().absolute()
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if not anc.is_dir():
        raise OutputPathError(f"{flag}: {anc} is a file, not a folder, so nothing can be written under it")
    try:
        probe = tempfile.mkdtemp(dir=anc, prefix=".calora-probe-")
        os.rmdir(probe)
    except OSError as exc:
        raise OutputPathError(f"{flag}: cannot write in {anc} ({exc.strerror})") from None


def sweep_stale(parent: Path, name: str) -> list[Path]:
    """Remove what a killed calora run left beside `parent/name`: temporary folders carrying calora's
    marker whose process is gone. An old output displaced mid-swap is put back if the new one never
    arrived. Returns what was removed."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    final = parent / name
    for p in sorted(parent.glob(f".{name}{_TMP_TAG}*")) + sorted(parent.glob(f".{name}{_OLD_TAG}*")):
        if not p.is_dir() or p.is_symlink() or not (p / MARKER).is_file() and output_kind(p) is None:
            continue  # not ours: leave it
        pid = p.name.split("-")[-2] if p.name.count("-") >= 2 else ""
        if pid.isdigit() and _alive(int(pid)):
            continue  # another calora process is still writing it
        if _OLD_TAG in p.name and not final.exists():
            os.replace(p, final)  # the swap was cut between its two renames: restore the old output
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers from an earlier, failed attempt in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AtomicDir:
    """Build an output folder under a hidden temporary name and swap it into place on success.

    The previous output at the same path stays intact until the new one is complete (then it is
    renamed aside and deleted). On any exception, KeyboardInterrupt included, the temporary folder
    is removed; an OSError from a full disk or an unwritable path becomes an `OutputPathError`
    naming `flag`. A SIGKILL leaves the temporary folder, which the next run sweeps."""

    def __init__(self, final: str | Path, kind: OutputKind, flag: str = "output", command: str = "") -> None:
        self.final, self.kind, self.flag, self.command = Path(final), kind, flag, command

    def __enter__(self) -> Path:
        parent = self.final.parent
        self.tmp: Path | None = None
        try:
            parent.mkdir(parents=True, exist_ok=True)
            sweep_stale(parent, self.final.name)
            # A Ctrl-C between mkdtemp and the `with` body would skip __exit__ and strand the folder.
            with deferred_signals():
                self.tmp = Path(tempfile.mkdtemp(dir=parent,
                                                 prefix=f".{self.final.name}{_TMP_TAG}{os.getpid()}-"))
                write_marker(self.tmp, self.kind, self.command)
        except BaseException as exc:
            self._discard()
            if isinstance(exc, OSError):
                raise _write_error(exc, self.flag, self.final) from None
            raise
        return self.tmp

    def _discard(self) -> None:
        if self.tmp is not None:
            with deferred_signals():
                shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._discard()
            if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
                raise _write_error(exc, self.flag, self.final) from exc
            return False
        try:
            _default_permissions(self.tmp)
            with deferred_signals():  # the two renames are one step: never stop between them
                if self.final.exists():
                    old = Path(tempfile.mkdtemp(dir=self.final.parent,
                                                prefix=f".{self.final.name}{_OLD_TAG}{os.getpid()}-"))
                    os.rmdir(old)
                    os.replace(self.final, old)
                    os.replace(self.tmp, self.final)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(self.tmp, self.final)
        except OSError as exc:
            self._discard()
            raise _write_error(exc, self.flag, self.final) from None
        return False


def _default_permissions(root: Path) -> None:
    """mkdtemp makes the folder 0700 and safetensors writes its files 0600; a bundle or task folder
    is meant to be shared (CI artifacts, an app build run by another user), so give what calora
    wrote the modes a plain mkdir/open would have under the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(folder, d), 0o777 & ~umask)
        for f in files:
            path = os.path.join(folder, f)
            if not os.path.islink(path):
                os.chmod(path, (os.stat(path).st_mode & 0o111 | 0o666) & ~umask)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them to the handlers that were
    installed before. Python runs signal handlers between bytecodes, so without this an interrupt
    can land between creating a temporary folder and recording it. Outside the main thread (where
    handlers cannot be changed) the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: held.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)


def _write_error(exc: OSError, flag: str, final: Path) -> OutputPathError:
    where = f" ({exc.filename})" if exc.filename else ""
    return OutputPathError(f"{flag} {final}: cannot write: {exc.strerror or exc}{where}; nothing was left there")
