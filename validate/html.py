"""One self-contained HTML page: summary, metric bars per target and task, error histograms, every
check. Plots are inline SVG written here (no plotting library, no scripts, no external assets), so
the page opens anywhere a CI job uploads it."""

from __future__ import annotations

import html as _h
import math

from .checks import Status

_COLORS = {"teacher": "#8c8c8c", "pytorch_compressed": "#4c72b0", "artifact": "#dd8452"}
_LABELS = {"teacher": "uncompressed + teacher LoRA", "pytorch_compressed": "PyTorch compressed + CA-LoRA",
           "artifact": "artifact on its runtime"}
_STATUS = {Status.PASS: "#2e7d32", Status.FAIL: "#c62828", Status.SKIP: "#9e6a00"}


def _e(x) -> str:
    return _h.escape(str(x))


def _metric_bars(report) -> str:
    groups = [(f"{b.target}-{b.mode}", t) for b in report.bundles for t in b.tasks]
    if not groups:
        return "<p>No task was evaluated.</p>"
    vals = [t.metrics.get(k, {}).get(t.primary_metric) for _, t in groups for k in _COLORS
            if isinstance(t.metrics.get(k, {}).get(t.primary_metric), float)]
    lo = max(0.0, math.floor((min(vals) if vals else 0.0) * 20) / 20 - 0.05)
    bw, gap, h, top, left = 14, 22, 220, 20, 44
    width = left + len(groups) * (3 * bw + gap) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h + 110}" role="img">']
    for i in range(6):  # y grid
        v = lo + (1 - lo) * i / 5
        y = top + h - h * (v - lo) / (1 - lo)
        parts.append(f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{100 * v:.0f}</text>')
    for g, (name, t) in enumerate(groups):
        x0 = left + g * (3 * bw + gap) + gap / 2
        for k, key in enumerate(_COLORS):
            v = t.metrics.get(key, {}).get(t.primary_metric)
            if not isinstance(v, float):
                continue
            y = top + h - h * (max(v, lo) - lo) / (1 - lo)
            parts.append(f'<rect x="{x0 + k * bw:.1f}" y="{y:.1f}" width="{bw - 2}" height="{top + h - y:.1f}" '
                         f'fill="{_COLORS[key]}"><title>{_e(name)} {_e(t.task)} {_LABELS[key]}: '
                         f'{100 * v:.2f}% {t.primary_metric}</title></rect>')
        cx = x0 + 1.5 * bw
        parts.append(f'<text x="{cx:.1f}" y="{top + h + 12}" font-size="10" text-anchor="end" '
                     f'transform="rotate(-40 {cx:.1f} {top + h + 12})">{_e(name)} / {_e(t.task)}</text>')
    parts.append("</svg>")
    legend = " ".join(f'<span style="color:{c}">&#9632;</span> {_LABELS[k]}' for k, c in _COLORS.items())
    return f'<p>{legend} (y axis: the task\'s primary metric, %)</p>' + "".join(parts)


def _histogram(hist: dict | None) -> str:
    if not hist:
        return "<em>not run</em>"
    counts, edges = hist["counts"], hist["log10_edges"]
    w, h, bw = 260, 70, 260 / len(counts)
    peak = max(counts + [hist["zeros"], 1])
    bars = "".join(f'<rect x="{i * bw:.1f}" y="{h - h * c / peak:.1f}" width="{bw - 1:.1f}" height="{h * c / peak:.1f}" '
                   f'fill="#4c72b0"><title>|err| in [1e{edges[i]:.1f}, 1e{edges[i + 1]:.1f}): {c}</title></rect>'
                   for i, c in enumerate(counts))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 14}">{bars}'
            f'<text x="0" y="{h + 12}" font-size="9">1e{edges[0]:.0f}</text>'
            f'<text x="{w}" y="{h + 12}" font-size="9" text-anchor="end">1e{edges[-1]:.0f}</text></svg>'
            f'<br><small>exact zeros: {hist["zeros"]}</small>')


def _noise_floor(report) -> str:
    from .noise_floor import COMPUTATION, TABLE_HEAD, table_rows

    rows = table_rows(report)
    if not rows:
        return ""
    return (f"<h2>Reference noise floor (where a value check failed)</h2><p>The artifact's logits and {_e(COMPUTATION)}, "
            "each against the float32 reference, on the first texts of the evaluation split; a ratio near 1x means "
            "the artifact is as close as an exact recomputation of the reference. A diagnosis only: the gates are "
            "unchanged.</p><table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in TABLE_HEAD) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def html(report) -> str:
    status = "PASS" if report.passed else "FAIL"
    rows = []
    for b in report.bundles:
        for t in b.tasks:
            v = t.values or {}
            m = {k: t.metrics.get(k, {}).get(t.primary_metric) for k in _COLORS}
            cells = [b.target, b.mode, b.runtime, t.task, t.examples, t.primary_metric,
                     *[(f"{100 * x:.2f}" if isinstance(x, float) else "-") for x in m.values()],
                     f"{v['agreement']:.4f}" if v else "-",
                     f"{v['max_abs_logit_error']:.3g} (tol {t.logit_tolerance['value']:.3g})" if v else "-",
                     f"{v['cosine']:.6f}" if v else "-",
                     ("inf" if v and not math.isfinite(v["sqnr_db"]) else f"{v['sqnr_db']:.1f}") if v else "-"]
            rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + f"<td>{_histogram(t.histogram)}</td></tr>")
    head = ["target", "mode", "runtime", "task", "examples", "metric", "teacher %", "PyTorch CA-LoRA %", "artifact %",
            "agreement", "max |logit err|", "cosine", "SQNR dB", "|logit error| histogram (log10)"]
    th_rows = "".join(f"<tr><td>{_e(b.target)}-{_e(b.mode)}</td>" + "".join(
        f"<td>{v:g}{' <b>(override)</b>' if b.threshold_sources[k].startswith('override') else ''}</td>"
        for k, v in b.thresholds.items()) + "</tr>" for b in report.bundles)
    th_head = "".join(f"<th>{_e(k)}</th>" for k in (report.bundles[0].thresholds if report.bundles else {}))
    checks = "".join(
        f'<tr><td style="color:{_STATUS[c.status]}"><b>{c.status.value}</b></td><td>{_e(c.stage.value)}</td>'
        f"<td>{_e(c.bundle)}</td><td>{_e(c.task or '')}</td><td>{_e(c.name)}</td><td>{_e(c.detail)}</td></tr>"
        for c in report.checks)
    n = {s: sum(1 for c in report.checks if c.status == s) for s in Status}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>calora-validate: {status}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ddd;padding:4px 6px;vertical-align:top}}th{{background:#f5f5f5}}
.status{{font-size:22px;font-weight:bold;color:{'#2e7d32' if report.passed else '#c62828'}}}</style></head><body>
<h1>calora-validate <span class="status">{status}</span></h1>
<p>{n[Status.PASS]} checks passed, {n[Status.FAIL]} failed, {n[Status.SKIP]} skipped (a skipped check could not run
here and is never counted as passed). Command <code>{_e(report.command)}</code>; machine {_e(report.machine)};
started {_e(report.started)}, {report.seconds} s.</p>
<h2>Task metric per target and task</h2>{_metric_bars(report)}
<h2>Parity per artifact</h2>
<p>Logit comparisons are against what each artifact's runtime computes, in PyTorch on the same texts: the compressed
model with CA-LoRA where the runtime runs int8 dynamic activations as training simulated them, the same trained weights
with float activations where it runs float (each check's detail names it). Task metrics are the trained model's.</p>
<table><tr>{''.join(f'<th>{_e(h)}</th>' for h in head)}</tr>{''.join(rows)}</table>
{_noise_floor(report)}
<h2>Thresholds applied</h2>
<p>Quantized backbones: max |logit error| tolerance = logit_steps &times; (max |reference logit| / 127), at least
logit_atol; float backbones: logit_atol.</p>
<table><tr><th>bundle</th>{th_head}</tr>{th_rows}</table>
<h2>All checks (fixed order: files, names, shapes, structure, tokenization, values, metric)</h2>
<table><tr><th>status</th><th>stage</th><th>bundle</th><th>task</th><th>check</th><th>detail</th></tr>{checks}</table>
</body></html>
"""
