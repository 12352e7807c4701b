"""The validation report as JSON (stable schema), Markdown (CI summary / PR comment) and HTML."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from calora.export.bundle import versions
from calora.train.outputs import AtomicDir, OutputKind

from .checks import Status
from .thresholds import INT8_SOURCE

_VERSIONED = ("calora", "torch", "transformers", "executorch", "onnxruntime", "coremltools", "pytorch_tokenizers")


def _finite(x):
    """JSON has no infinity: an exact match's SQNR is written as null with a note in the schema."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def to_dict(report) -> dict:
    from .core import REPORT_SCHEMA_VERSION

    return _finite({
        "schema_version": REPORT_SCHEMA_VERSION,
        "status": "pass" if report.passed else "fail",
        "command": report.command, "started": report.started, "seconds": report.seconds,
        "machine": report.machine, "versions": versions(_VERSIONED),
        "summary": {s.value: sum(1 for c in report.checks if c.status == s) for s in Status},
        "bundles": [dataclasses.asdict(b) for b in report.bundles],
        "checks": [c.to_dict() for c in report.checks],
        "failures": [c.to_dict() for c in report.failures],
        "skipped": [c.to_dict() for c in report.skipped],
        "notes": {"sqnr_db": "null means the artifact's logits equal PyTorch's exactly (infinite SQNR)",
                  "stage_order": "files, names, shapes, structure, tokenization, values, metric"},
    })


def _pct(m: dict | None, key: str) -> str:
    if not m or "skipped" in m or key not in m:
        return "skipped" if m and "skipped" in m else "-"
    return f"{100 * m[key]:.2f}"


def markdown(report) -> str:
    status = "PASS" if report.passed else "FAIL"
    s = report.checks
    lines = [f"# calora-validate: {status}", "",
             f"- command: `{report.command}`", f"- machine: {report.machine}", f"- started: {report.started}, "
             f"{report.seconds} s", f"- checks: {sum(c.status == Status.PASS for c in s)} passed, "
             f"{sum(c.status == Status.FAIL for c in s)} failed, {sum(c.status == Status.SKIP for c in s)} skipped", "",
             "Metric columns are in % on the task's evaluation split: the uncompressed backbone with its teacher LoRA, "
             "the compressed PyTorch model with CA-LoRA, and the artifact in the runtime named in its row. Agreement, "
             "max |error|, cosine and SQNR compare the artifact's logits with what its runtime computes in PyTorch: "
             "the compressed model where the runtime runs int8 dynamic activations as training simulated them "
             "(ExecuTorch/XNNPACK, ONNX Runtime's int8 route), the same trained weights with float activations "
             "where it runs float (ONNX Runtime's int4 MatMulNBits, Core ML); each check's detail names it.", "",
             "| target | mode | runtime | task | examples | metric | teacher | PyTorch CA-LoRA | artifact | agreement "
             "| max abs logit err (tol) | cosine | SQNR dB | result |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in report.bundles:
        for t in b.tasks:
            mine = [c for c in s if c.bundle == b.path and c.task in (t.task, None)]
            res = "FAIL" if any(c.status == Status.FAIL for c in mine) else "pass"
            v = t.values or {}
            sq = v.get("sqnr_db")
            lines.append(
                f"| {b.target} | {b.mode} | {b.runtime} | {t.task} | {t.examples} | {t.primary_metric} | "
                f"{_pct(t.metrics.get('teacher'), t.primary_metric)} | {_pct(t.metrics.get('pytorch_compressed'), t.primary_metric)} | "
                f"{_pct(t.metrics.get('artifact'), t.primary_metric)} | "
                + (f"{v['agreement']:.4f} | {v['max_abs_logit_error']:.3g} ({t.logit_tolerance['value']:.3g}) | "
                   f"{v['cosine']:.6f} | {'inf' if sq is None or not math.isfinite(sq) else f'{sq:.1f}'} | "
                   if v else "- | - | - | - | ") + f"{res} |")
    lines += _generation_rows(report)
    lines += _noise_floor_rows(report)
    lines += ["", "## Thresholds applied", "",
              "| bundle | " + " | ".join(report.bundles[0].thresholds) + " |" if report.bundles else "",
              "|---|" + "---|" * (len(report.bundles[0].thresholds) if report.bundles else 0)]
    for b in report.bundles:
        lines.append(f"| {b.target}-{b.mode} | " + " | ".join(
            f"{v:g}" + (" (override)" if b.threshold_sources[k].startswith("override") else
                        " (int8)" if INT8_SOURCE in b.threshold_sources[k] else "")
            for k, v in b.thresholds.items()) + " |")
    lines += ["", "Quantized backbones: max |logit error| tolerance = logit_steps x (max |reference logit| / 127), "
              "at least logit_atol; float backbones: logit_atol."]
    if any(INT8_SOURCE in src for b in report.bundles for src in b.threshold_sources.values()):
        lines.append("(int8): the default for a runtime that computes the backbone's activations in int8 "
                     "(manifest runtime.activations int8-dynamic), checked against the trained model: its int8 rounding "
                     "and training's simulated one differ and drift apart over many layers, and a one-token decode step "
                     "can round unlike a prefill (calora.validate.thresholds.INT8_ACTIVATIONS). The task metric gate "
                     "(max_metric_drop) is the same for every runtime.")
    lines.append("")
    for title, items in (("Failures", report.failures), ("Skipped (could not run here; not passed)", report.skipped)):
        lines += [f"## {title}", ""]
        lines += [f"- {c.line()}" for c in items] or ["- none"]
        lines.append("")
    return "\n".join(lines)


def _noise_floor_rows(report) -> list[str]:
    """Where a value check failed: the artifact's error beside the reference's own float64 noise."""
    from .noise_floor import COMPUTATION, TABLE_HEAD, table_rows

    rows = table_rows(report)
    if not rows:
        return []
    return ["", "## Reference noise floor (where a value check failed)", "",
            f"The artifact's logits and {COMPUTATION}, each against the float32 reference, on the first texts of "
            "the evaluation split. A ratio near 1x: the artifact is as close to the reference as an exact "
            "recomputation of it; far above 1x: the artifact departs from it. A diagnosis only: the gates are "
            "unchanged.", "", "| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def _generation_rows(report) -> list[str]:
    """Generative tasks: free-running greedy agreement, KV-cache error, perplexity and speed."""
    rows = [(b, t) for b in report.bundles for t in b.tasks if t.generation]
    if not rows:
        return []
    out = ["", "## Generation", "",
           "Greedy generations of the artifact in its runtime against the compressed PyTorch model, token by "
           "token; the KV-cache error is max |logits of cached decoding - logits of a full prefill|; tokens/s are "
           "medians over the examples on the validating machine (batch 1), not a phone.", "",
           "| target | mode | task | identical | token agreement | first divergence | KV-cache max err | "
           "perplexity teacher / PyTorch / artifact | prefill tok/s | decode tok/s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for b, t in rows:
        g, v, sp = t.generation, t.values or {}, t.speed or {}
        flips = f" ({v['kv_cache_argmax_flips']} of {v['kv_cache_positions']} flipped)" \
            if "kv_cache_positions" in v else ""
        ppl = " / ".join(f"{t.metrics.get(k, {}).get('perplexity', float('nan')):.3f}"
                         for k in ("teacher", "pytorch_compressed", "artifact"))
        out.append(f"| {b.target} | {b.mode} | {t.task} | {g['identical']:.3f} | {g['token_agreement']:.4f} | "
                   f"{g['mean_first_divergence']:.1f} | {v.get('kv_cache_max_abs_error', float('nan')):.3g}{flips} | {ppl} | "
                   f"{sp.get('prefill_tokens_per_s', float('nan')):.0f} | {sp.get('decode_tokens_per_s', float('nan')):.1f} |")
    return out


def write(report, out_dir: str | Path) -> dict[str, Path]:
    """report.json, report.md and report.html in `out_dir` (replaced as a whole, atomically)."""
    from .html import html

    out_dir = Path(out_dir)
    with AtomicDir(out_dir, OutputKind.REPORT, "--report") as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a report folder is for sharing (CI uploads, web servers)
        (tmp / "report.json").write_text(json.dumps(to_dict(report), indent=2) + "\n")
        (tmp / "report.md").write_text(markdown(report))
        (tmp / "report.html").write_text(html(report))
    return {k: out_dir / f"report.{k}" for k in ("json", "md", "html")}
