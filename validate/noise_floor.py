"""The reference's own numerical noise, measured when an artifact misses a value gate.

A fixed gate cannot tell a wrong graph from a model that is numerically unstable: with one int8
activation scale per example (ONNX Runtime's int8 route), any change in float summation order can
flip activation codes, and many layers compound the flips. On 30-layer SmolLM2 PyTorch in float64
strays from PyTorch in float32 as far as its ONNX artifact does (docs/RESULTS.md, section 6).

So where a value check fails, calora-validate runs the same PyTorch reference in float64 on the
first N evaluated texts (generative tasks: the first N prompt + response sequences, teacher-forced)
and reports its distance from the float32 reference beside the artifact's
distance on the same texts, as a ratio per metric. This is a diagnosis for the reader, not a gate:
no threshold moves and the failure stays a failure. A ratio near 1 says the artifact is about as
close to the reference as an exact recomputation of the reference is; a ratio far above 1 points
at the artifact.
"""

from __future__ import annotations

import copy
import hashlib
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from .checks import compare

#: Texts the float64 recomputation runs on by default (`--noise-floor-examples`).
DEFAULT_EXAMPLES = 256
COMPUTATION = "the same PyTorch reference in float64"


def measure(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray, reference: np.ndarray, got: np.ndarray,
            examples: int, batch_size: int = 64, cache: dict | None = None) -> dict:
    """Compare `reference` (the float32 reference's logits) with `model` run in float64 and with the
    artifact's logits `got`, on the first `examples` rows. `model` is copied, never converted in place
    (the caller's reference stays float32). Returns a dict with `examples`, `computation`,
    `reference_float64` and `artifact` (each `checks.compare` output) and `ratios` (artifact error over
    float64 error per metric), or `{"skipped": reason}` when the model cannot run in float64.
    `cache` (a dict the caller keeps) holds the float64 logits per model and inputs, so bundles of
    the same task (baked and swappable, several targets) pay for one float64 pass."""
    k = min(int(examples), len(ids))
    ids, mask = ids[:k], mask[:k]

    def run(f64: torch.nn.Module) -> np.ndarray:
        outs = []
        with tqdm(total=k, desc="noise floor (reference in float64)", unit="ex", leave=False) as bar:
            for i in range(0, k, batch_size):
                out = f64(input_ids=torch.as_tensor(ids[i:i + batch_size], dtype=torch.long),
                          attention_mask=torch.as_tensor(mask[i:i + batch_size], dtype=torch.long))
                outs.append(out.logits.detach().to(torch.float64).numpy())
                bar.update(len(outs[-1]))
        return np.concatenate(outs)

    dbl = _float64(model, hashlib.sha256(ids.tobytes() + mask.tobytes()).hexdigest(), cache, run)
    return {"skipped": dbl} if isinstance(dbl, str) else _result(k, reference[:k], dbl, got[:k])


def measure_sequences(model: torch.nn.Module, sequences: list[list[int]], starts: list[int],
                      reference_rows: list[np.ndarray], got_rows: list[np.ndarray], examples: int,
                      cache: dict | None = None) -> dict:
    """`measure` for a generative task's teacher-forced check: each sequence (prompt + response) is
    one example, its rows the next-token logits at the response positions (`start - 1` to the
    second-to-last token), as `reference_rows` and `got_rows` hold them."""
    k = min(int(examples), len(sequences))
    pairs = list(zip(sequences[:k], starts[:k]))

    def run(f64: torch.nn.Module) -> np.ndarray:
        rows = []
        for ids, start in tqdm(pairs, desc="noise floor (reference in float64)", unit="ex", leave=False):
            logits = f64(input_ids=torch.tensor([ids])).logits[0].detach().to(torch.float64).numpy()
            rows.append(logits[start - 1:len(ids) - 1])
        return np.concatenate(rows)

    dbl = _float64(model, hashlib.sha256(repr(pairs).encode()).hexdigest(), cache, run)
    return {"skipped": dbl} if isinstance(dbl, str) else \
        _result(k, np.concatenate(reference_rows[:k]), dbl, np.concatenate(got_rows[:k]))


def _float64(model: torch.nn.Module, inputs_key: str, cache: dict | None, run) -> np.ndarray | str:
    """`run` on a float64 copy of `model` (cached per model and inputs), or why it cannot run."""
    key = (id(model), inputs_key)
    if cache is not None and key in cache:
        return cache[key]
    try:
        with torch.no_grad():
            out = run(_float64_copy(model))
    except Exception as exc:  # noqa: BLE001 - e.g. a kernel with no float64 path: say so, never fail the run
        out = f"the reference does not run in float64 ({type(exc).__name__}: {str(exc)[:200]})"
    if cache is not None:
        cache[key] = out
    return out


def _result(k: int, reference: np.ndarray, dbl: np.ndarray, got: np.ndarray) -> dict:
    floor, art = compare(reference, dbl), compare(reference, got)
    return {"examples": k, "computation": COMPUTATION, "reference_float64": floor, "artifact": art,
            "ratios": ratios(floor, art)}


def _float64_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of `model`, including modules it holds outside its module tree (calora's
    `TiedLMHead` reads the embedding table it is tied to without owning it, so `.double()` alone
    would leave that table float32 in a model whose export replaced the embedding)."""
    f64 = copy.deepcopy(model).double().eval()
    for module in list(f64.modules()):
        for held in list(vars(module).values()):
            if isinstance(held, torch.nn.Module):
                held.double()
    return f64


def ratios(floor: dict, art: dict) -> dict:
    """Artifact error over the float64 recomputation's error, per metric, each as an error that grows
    (1 - agreement, max |error|, 1 - cosine, noise power from SQNR). None where the floor is zero."""
    def err(d: dict, key: str) -> float:
        if key == "agreement":
            return 1.0 - d["agreement"]
        if key == "cosine":
            return max(1.0 - d["cosine"], 0.0)
        if key == "sqnr_db":
            return 0.0 if math.isinf(d["sqnr_db"]) else 10 ** (-d["sqnr_db"] / 10)
        return d[key]

    out = {}
    for key in ("agreement", "max_abs_logit_error", "cosine", "sqnr_db"):
        a, f = err(art, key), err(floor, key)
        out[key] = None if f == 0 else a / f
    return out


def describe(nf: dict, key: str) -> str:
    """One clause for a failed check's detail: the float64 recomputation's figure and the ratio."""
    if "skipped" in nf:
        return f"; reference noise floor not measured: {nf['skipped']}"
    f, a = nf["reference_float64"][key], nf["artifact"][key]
    fmt = _FORMATS[key] + (" dB" if key == "sqnr_db" else "")
    return (f"; reference noise floor on the first {nf['examples']} texts ({COMPUTATION} against float32): "
            f"{fmt.format(f)}, the artifact {fmt.format(a)} there, {_times(nf['ratios'][key])} the floor's error")


#: Column heads of the report's noise-floor table (Markdown and HTML share them).
TABLE_HEAD = ("target", "mode", "task", "texts", "metric", "artifact", "PyTorch float64", "artifact error / float64 error")
_LABELS = {"agreement": "agreement", "max_abs_logit_error": "max abs logit error", "cosine": "cosine",
           "sqnr_db": "SQNR dB"}
_FORMATS = {"agreement": "{:.4f}", "max_abs_logit_error": "{:.4g}", "cosine": "{:.9f}", "sqnr_db": "{:.1f}"}


def _times(r: float | None) -> str:
    if r is None:
        return "n/a (the float64 recomputation matches exactly)"
    return f"{r:,.0f}x" if r >= 100 else f"{r:.2f}x"


def table_rows(report) -> list[tuple[str, ...]]:
    """One row per metric of each task whose noise floor was measured (or one saying why not)."""
    rows = []
    for b in report.bundles:
        for t in b.tasks:
            nf = t.noise_floor
            if nf is None:
                continue
            if "skipped" in nf:
                rows.append((b.target, b.mode, t.task, "-", "-", "-", "-", f"not measured: {nf['skipped']}"))
                continue
            for key, label in _LABELS.items():
                a, f, r = nf["artifact"][key], nf["reference_float64"][key], nf["ratios"][key]
                rows.append((b.target, b.mode, t.task, str(nf["examples"]), label, _FORMATS[key].format(a),
                             _FORMATS[key].format(f), "-" if r is None else _times(r)))
    return rows
