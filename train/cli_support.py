"""What the three CLIs share: --verbose/--debug, quiet dependencies, signals, and exit codes.

`run_cli` is the one place where an exception becomes an exit code and a single line on stderr:
`CaloraError` -> its `exit_code` (2 for bad input, 1 for a parity failure); an OSError the user can
fix (full disk, no permission) -> 2 with the file named; Ctrl-C / SIGTERM -> 130 / 143 after every
`with` block has removed its partial output; anything else is a bug -> 3, one line plus the path of
the traceback (printed in full with --debug).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable, Iterator

from .errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_SIGINT, EXIT_SIGTERM, CaloraError, Terminated
from .outputs import WRITE_ERRNOS

#: Loggers of dependencies whose INFO/WARNING chatter buries calora's own lines (torchao's
#: "failed to load library", accelerate's device notes, coremltools' version warnings, ...).
_NOISY_LOGGERS = ("torchao", "torch", "accelerate", "transformers", "peft", "coremltools", "onnxscript", "onnx_ir",
                  "executorch", "huggingface_hub", "root", "bitsandbytes", "urllib3")


def add_common_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--verbose", action="store_true", help="show the dependencies' own warnings and log lines")
    g.add_argument("--debug", action="store_true", help="on an internal error, print the full traceback")


def _close_progress_bars() -> None:
    """End any open tqdm bar so the error line starts on a line of its own (CI logs show no \\r)."""
    tqdm_mod = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(tqdm_mod, "tqdm", None), "_instances", []) or []):
        with contextlib.suppress(Exception):
            bar.close()


def _error(prog: str, text: str) -> None:
    _close_progress_bars()
    print(f"{prog}: {text}", file=sys.stderr, flush=True)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def quiet_dependencies() -> None:
    """Silence the dependencies' warnings and log chatter (not calora's own output).

    Environment variables must be set before those packages are imported: the CLIs call this
    first. Telemetry that a runtime would send is switched off here as well (offline honesty)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # child processes (ORT's converter) too
    warnings.filterwarnings("ignore")
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging  # every CLI loads transformers anyway

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" bars: not calora's progress


def offline_defaults() -> None:
    """No telemetry, whatever the verbosity: calora contacts the network only to fetch a hub id the
    user named. (ONNX Runtime's telemetry is switched off where it is imported: `disable_ort_telemetry`.)"""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def disable_ort_telemetry() -> None:
    """ONNX Runtime looks up a telemetry host unless told not to (FACTS.md)."""
    import onnxruntime as ort

    if hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()


class _Received:
    """The last interrupting signal seen during a CLI run. A signal that lands inside a C extension
    (an import, a runtime call) can surface as some other exception (pybind turns it into
    ImportError): the run was still interrupted, not broken."""

    signal: int | None = None


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM `Terminated`, so partial outputs are removed by
    the `with` blocks that made them; both are remembered in `_Received`. Main thread only."""
    import threading

    _Received.signal = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_int(signum, frame):
        _Received.signal = signum
        raise KeyboardInterrupt()

    def on_term(signum, frame):
        _Received.signal = signum
        raise Terminated()

    previous = {sig: signal.signal(sig, handler) for sig, handler in ((signal.SIGINT, on_int),
                                                                       (signal.SIGTERM, on_term))}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _traceback_file(prog: str) -> Path | None:
    text = traceback.format_exc()
    for folder in (Path(os.environ.get("CALORA_CACHE", Path.home() / ".cache" / "calora")) / "logs",
                   Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{prog}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.traceback.txt"
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def run_cli(prog: str, args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Run a CLI's body with the shared error, signal and noise handling; returns the exit code."""
    offline_defaults()
    if not getattr(args, "verbose", False):
        quiet_dependencies()
    try:
        with _signals():
            return body()
    except (KeyboardInterrupt, Terminated):
        return _interrupted(prog, _Received.signal or signal.SIGINT)
    except Exception as exc:  # noqa: BLE001 - the one place an exception becomes an exit code
        if _Received.signal is not None:  # the interrupt surfaced inside a C extension as another type
            return _interrupted(prog, _Received.signal)
        if isinstance(exc, CaloraError):
            _error(prog, f"error: {one_line(exc)}")
            return exc.exit_code
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:  # a full disk, no permission: fixable
            _error(prog, f"error: {exc.filename or 'a file'}: {exc.strerror or exc}")
            return EXIT_BAD_INPUT
        return _internal(prog, args, exc)


def _interrupted(prog: str, signum: int) -> int:
    name, code = ("SIGTERM", EXIT_SIGTERM) if signum == signal.SIGTERM else ("SIGINT", EXIT_SIGINT)
    _error(prog, f"interrupted ({name}); no partial output was left (a training run resumes from its checkpoint)")
    return code


def _internal(prog: str, args: argparse.Namespace, exc: BaseException) -> int:
    if getattr(args, "debug", False):
        _close_progress_bars()
        traceback.print_exc()
        _error(prog, f"internal error: {type(exc).__name__}: {one_line(exc)}")
        return EXIT_INTERNAL
    path = _traceback_file(prog)
    where = f"traceback in {path}" if path else "traceback could not be written"
    _error(prog, f"internal error: {type(exc).__name__}: {one_line(exc)[:300]} ({where}; --debug prints it)")
    return EXIT_INTERNAL
