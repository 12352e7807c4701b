"""Check results, the typed error that carries every failure, and the numeric comparisons."""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from calora.targets.base import Stage
from calora.train.errors import EXIT_PARITY, CaloraError


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"  # could not run here; `detail` says why. Never counted as a pass.


@dataclasses.dataclass(frozen=True)
class Check:
    stage: Stage
    name: str
    status: Status
    detail: str
    bundle: str
    target: str
    task: str | None = None
    measured: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stage"], d["status"] = self.stage.value, self.status.value
        return d

    def line(self) -> str:
        where = f"{self.bundle}" + (f" [{self.task}]" if self.task else "")
        return f"{self.status.value.upper()} {self.stage.value}: {where}: {self.name}: {self.detail}"


def ordered(checks: list[Check]) -> list[Check]:
    """Fixed report order: bundle, then stage (files, names, shapes, structure, tokenization, values,
    metric), then task; stable within."""
    bundles = list(dict.fromkeys(c.bundle for c in checks))
    return sorted(checks, key=lambda c: (bundles.index(c.bundle), c.stage.order, c.task or ""))


class ParityError(CaloraError):
    """Validation failed: `failures` holds every failed check, in report order."""

    exit_code = EXIT_PARITY

    def __init__(self, failures: list[Check]) -> None:
        self.failures = failures
        super().__init__(f"{len(failures)} parity check(s) failed:\n" + "\n".join("  " + f.line() for f in failures))


# ---- numeric comparisons ------------------------------------------------------------------------
def compare(reference: np.ndarray, got: np.ndarray) -> dict:
    """Agreement and logit errors of `got` against `reference` ([N, C] float logits)."""
    ref, out = np.asarray(reference, np.float64), np.asarray(got, np.float64)
    err = np.abs(ref - out)
    noise = float((err ** 2).sum())
    signal = float((ref ** 2).sum())
    # Cosine of the flattened logit matrices: per-example cosines of 2-class logits near a tie swing
    # to -1 on noise far below the decision threshold, so they say little about parity.
    den = float(np.linalg.norm(ref) * np.linalg.norm(out))
    cos = float((ref * out).sum() / den) if den > 0 else float(np.array_equal(ref, out))
    return {
        "examples": int(ref.shape[0]),
        "agreement": float((ref.argmax(-1) == out.argmax(-1)).mean()),
        "max_abs_logit_error": float(err.max()) if err.size else 0.0,
        "mean_abs_logit_error": float(err.mean()) if err.size else 0.0,
        "cosine": cos,
        "sqnr_db": float("inf") if noise == 0 else float(10 * np.log10(max(signal, 1e-30) / noise)),
        "max_abs_reference_logit": float(np.abs(ref).max()) if ref.size else 0.0,
    }


def error_histogram(reference: np.ndarray, got: np.ndarray, bins: int = 24) -> dict:
    """Histogram of per-logit |error| on log10 bins from 1e-8 to 1e+2 (exact zeros counted apart)."""
    err = np.abs(np.asarray(reference, np.float64) - np.asarray(got, np.float64)).ravel()
    zeros = int((err == 0).sum())
    edges = np.logspace(-8, 2, bins + 1)
    counts, _ = np.histogram(np.clip(err[err > 0], edges[0], edges[-1]), bins=edges)
    return {"log10_edges": [float(e) for e in np.log10(edges)], "counts": [int(c) for c in counts], "zeros": zeros}


def task_metrics(pred_names: list[str], true_names: list[str], labels: list[str]) -> dict:
    """Accuracy and macro F1 over label *names* (so a swapped label map shows up as a metric drop)."""
    pred, true = np.array(pred_names, dtype=object), np.array(true_names, dtype=object)
    f1s = []
    for c in labels:
        tp = int(((pred == c) & (true == c)).sum())
        fp = int(((pred == c) & (true != c)).sum())
        fn = int(((pred != c) & (true == c)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float((pred == true).mean()) if len(true) else 0.0, "f1_macro": float(np.mean(f1s)),
            "examples": len(true_names)}


def primary_metric(true_names: list[str], labels: list[str]) -> str:
    """Accuracy, or macro F1 when the rarest class has under two thirds of its fair share (unbalanced)."""
    counts = [true_names.count(c) for c in labels]
    fair = len(true_names) / max(len(labels), 1)
    return "f1_macro" if counts and min(counts) < fair / 3 * 2 else "accuracy"
