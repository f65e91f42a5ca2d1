"""The report as one self-contained HTML page: a table of checks per stage and inline SVG
plots (confusion matrix, ROC curve, latency distribution, shadow differences); no scripts,
no external files."""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np

from slipway.validation.checks import Report, StageResult

_STYLE = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px}
.pass{color:#17702a}.fail{color:#b00020;font-weight:bold}.info{color:#666}
svg{margin:0 1em 1em 0;border:1px solid #eee}figure{display:inline-block;margin:0}"""

W, H, PAD = 320, 240, 36


def to_html(report: Report) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Validation of {escape(report.ref)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Validation of {escape(report.ref)}: "
        f"<span class='{'pass' if report.passed else 'fail'}'>{verdict}</span></h1>",
        f"<p>Policy <b>{escape(report.policy)}</b>; production: "
        f"{escape(report.against or 'none')}; at {escape(report.created_at)}</p>",
    ]
    for stage in report.stages:
        parts.append(_stage(stage))
    parts.append("</body></html>")
    return "".join(parts)


def _stage(stage: StageResult) -> str:
    state = "pass" if stage.passed else "fail"
    kind = "required" if stage.required else "advisory"
    out = [
        f"<h2>{escape(stage.stage)} <span class='{state}'>{state}</span>"
        f" <small>({kind}, {stage.seconds:g}s)</small></h2>",
        "<table><tr><th>check</th><th>value</th><th>threshold</th><th>verdict</th>"
        "<th>detail</th></tr>",
    ]
    for c in stage.checks:
        out.append(
            f"<tr><td>{escape(c.name)}</td><td>{escape(str(c.value))}</td>"
            f"<td>{escape(c.threshold)}</td><td class='{c.verdict}'>{c.verdict}</td>"
            f"<td>{escape(c.detail)}</td></tr>"
        )
    out.append("</table>")
    out.extend(_plots(stage.data))
    return "".join(out)


def _plots(data: dict[str, Any]) -> list[str]:
    figures = []
    if "confusion" in data:
        figures.append(_confusion(data["classes"], data["confusion"]))
    if "roc" in data:
        figures.append(_line("ROC curve", data["roc"]["fpr"], data["roc"]["tpr"], "FPR", "TPR"))
    if "residuals" in data:
        figures.append(_histogram("residuals", data["residuals"]))
    for run in data.get("runs", []):
        figures.append(_histogram(f"latency ms at {run['rate']:g}/s", run["latencies_ms"]))
    if data.get("diffs"):
        figures.append(_histogram("shadow score differences", data["diffs"]))
    if data.get("latency_deltas_ms"):
        figures.append(_histogram("shadow latency delta ms", data["latency_deltas_ms"]))
    return figures


def _svg(title: str, body: str) -> str:
    return (
        f"<figure><svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}'"
        f" viewBox='0 0 {W} {H}' role='img' aria-label='{escape(title)}'>"
        f"<text x='{W / 2}' y='16' text-anchor='middle' font-size='13'>{escape(title)}</text>"
        f"{body}</svg></figure>"
    )


def _confusion(classes: list[str], matrix: list[list[int]]) -> str:
    n = len(classes)
    size = min((W - 2 * PAD) / max(n, 1), (H - 2 * PAD) / max(n, 1))
    top = max(max(row) for row in matrix) or 1
    cells = []
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            x, y = PAD + j * size, PAD + i * size
            shade = int(255 - 200 * count / top)
            ink = "#fff" if shade < 130 else "#000"
            cells.append(
                f"<rect x='{x:.1f}' y='{y:.1f}' width='{size:.1f}' height='{size:.1f}'"
                f" fill='rgb({shade},{shade},255)' stroke='#fff'/>"
                f"<text x='{x + size / 2:.1f}' y='{y + size / 2 + 4:.1f}' text-anchor='middle'"
                f" font-size='11' fill='{ink}'>{count}</text>"
            )
    for k, name in enumerate(classes):
        cells.append(
            f"<text x='{PAD - 4}' y='{PAD + k * size + size / 2 + 4:.1f}' text-anchor='end'"
            f" font-size='10'>{escape(name[:6])}</text>"
        )
    cells.append(
        f"<text x='{PAD + n * size / 2:.1f}' y='{H - 6}' text-anchor='middle' font-size='10'>"
        "predicted (columns) / true (rows)</text>"
    )
    return _svg("confusion matrix", "".join(cells))


def _axes(xlabel: str, ylabel: str) -> str:
    return (
        f"<line x1='{PAD}' y1='{H - PAD}' x2='{W - 10}' y2='{H - PAD}' stroke='#444'/>"
        f"<line x1='{PAD}' y1='{H - PAD}' x2='{PAD}' y2='24' stroke='#444'/>"
        f"<text x='{W / 2}' y='{H - 8}' text-anchor='middle' font-size='10'>{escape(xlabel)}</text>"
        f"<text x='10' y='{H / 2}' font-size='10' transform='rotate(-90 10 {H / 2})'>"
        f"{escape(ylabel)}</text>"
    )


def _line(title: str, xs: list[float], ys: list[float], xlabel: str, ylabel: str) -> str:
    sx, sy = W - PAD - 10, H - PAD - 24
    points = " ".join(
        f"{PAD + x * sx:.1f},{H - PAD - y * sy:.1f}" for x, y in zip(xs, ys, strict=True)
    )
    diagonal = f"<line x1='{PAD}' y1='{H - PAD}' x2='{PAD + sx}' y2='24' stroke='#bbb'/>"
    return _svg(
        title,
        _axes(xlabel, ylabel)
        + diagonal
        + f"<polyline points='{points}' fill='none' stroke='#1f5fbf' stroke-width='2'/>",
    )


def _histogram(title: str, values: list[float], bins: int = 30) -> str:
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if not data.size:
        return ""
    counts, edges = np.histogram(data, bins=bins)
    top = counts.max() or 1
    width = (W - PAD - 10) / bins
    bars = []
    for i, count in enumerate(counts):
        height = (H - PAD - 24) * count / top
        bars.append(
            f"<rect x='{PAD + i * width:.1f}' y='{H - PAD - height:.1f}' width='{width - 1:.1f}'"
            f" height='{height:.1f}' fill='#5b8bd9'/>"
        )
    labels = (
        f"<text x='{PAD}' y='{H - PAD + 12}' font-size='10'>{edges[0]:.3g}</text>"
        f"<text x='{W - 10}' y='{H - PAD + 12}' text-anchor='end' font-size='10'>"
        f"{edges[-1]:.3g}</text>"
    )
    return _svg(title, _axes("", "count") + "".join(bars) + labels)
