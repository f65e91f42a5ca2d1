"""The monitoring report of a deployment: one self-contained HTML file (inline SVG, no scripts,
no network) and a JSON document with the same numbers.

Input: the server's ``GET /api/monitoring/{deployment}`` document (drift verdicts with
reference and live distributions per feature, latency and errors over time) plus alert events.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from typing import Any

WIDTH, HEIGHT = 420, 150
REF_COLOUR, CUR_COLOUR = "#4c78a8", "#f58518"


def report_json(
    monitoring: dict[str, Any], events: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """The report's numbers: drift per version, latency percentiles over time, and requests by
    outcome since the server started (what ``slipway_requests_total`` sums to)."""
    totals = monitoring.get("requests")
    period = "since the server started"
    if totals is None:  # a server from before the totals: its timeline (the last hour or so)
        totals, period = {}, "over the timeline"
        for point in monitoring.get("timeline", []):
            for outcome, count in point.get("requests", {}).items():
                totals[outcome] = totals.get(outcome, 0.0) + count
    return {
        "deployment": monitoring["deployment"],
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "policy": monitoring.get("policy", {}),
        "window": monitoring.get("window", {}),
        "versions": monitoring.get("versions", []),
        "latency": [
            {k: p.get(k) for k in ("at", "latency_p50", "latency_p95", "latency_p99")}
            for p in monitoring.get("timeline", [])
        ],
        "requests_by_outcome": totals,
        "requests_period": period,
        "alerts": list(events),
        "capture_dropped": monitoring.get("dropped", 0),
        "unprofiled": monitoring.get("unprofiled", []),
    }


def unprofiled_words(ref: str) -> str:
    """Why a served version has no drift evaluation, and what gives it one."""
    return (
        f"{ref} has no reference profile, so its live inputs have nothing to be compared with:"
        " register it with its training rows (`slipway models register ... --reference"
        " TRAIN.csv`, or `reference=` in the SDK) to measure drift."
    )


def window_words(window: Any) -> str:
    """``{"kind": "time", "size": 3600, "slots": 12}`` → ``the last 3600 s in 12 slots``."""
    if not isinstance(window, dict) or "size" not in window:
        return "-"
    unit = " s" if window.get("kind") == "time" else " rows"
    return f"the last {window['size']:g}{unit} in {window.get('slots', 1)} slots"


def policy_words(policy: Any) -> str:
    """The drift policy's settings as ``minimum sample 100, alpha 0.01, ...``."""
    if not isinstance(policy, dict) or not policy:
        return "-"
    names = {"min_samples": "minimum sample", "alpha": "alpha (Benjamini–Hochberg)"}
    named = {"psi_threshold": "PSI above", "wasserstein_threshold": "Wasserstein above"}
    words = []
    for key, value in policy.items():
        label = names.get(key) or named.get(key) or key.replace("_", " ")
        words.append(f"{label} {_fmt(value) if isinstance(value, float) else value}")
    return ", ".join(words)


def _utc(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total if total else 0.0 for c in counts]


def bars_svg(labels: Sequence[str], reference: Sequence[float], current: Sequence[float]) -> str:
    """Side-by-side bars of two distributions' shares per bin."""
    ref, cur = _shares(reference), _shares(current)
    n = max(1, len(labels))
    top = max([*ref, *cur, 1e-9])
    slot = (WIDTH - 40) / n
    bar = max(1.0, slot / 2 - 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 30}" '
        f'role="img"><title>reference vs current</title>'
    ]
    for i, label in enumerate(labels):
        x = 30 + i * slot
        for j, (share, colour) in enumerate(((ref[i], REF_COLOUR), (cur[i], CUR_COLOUR))):
            h = HEIGHT * share / top
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{HEIGHT - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{_e(label)}: {share:.3f}</title></rect>'
            )
        if n <= 14:
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT + 12}" font-size="8">{_e(label[:10])}</text>'
            )
    parts.append(f'<line x1="28" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}" stroke="#999"/>')
    parts.append(f'<text x="0" y="10" font-size="9">{top:.2f}</text></svg>')
    return "".join(parts)


def lines_svg(series: dict[str, Sequence[float | None]]) -> str:
    """Line chart of a few series over the same points (gaps where a value is None)."""
    values = [v for s in series.values() for v in s if v is not None]
    top = max([*values, 1e-9])
    points = max([len(s) for s in series.values()] + [2])
    colours = ["#54a24b", "#f58518", "#e45756", "#4c78a8"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 20}" '
        f'role="img"><title>over time</title>'
    ]
    for k, (name, s) in enumerate(series.items()):
        coords = [
            f"{30 + i * (WIDTH - 40) / (points - 1):.1f},{HEIGHT - HEIGHT * v / top:.1f}"
            for i, v in enumerate(s)
            if v is not None
        ]
        colour = colours[k % len(colours)]
        if coords:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                f'points="{" ".join(coords)}"/>'
            )
        parts.append(
            f'<text x="{40 + 90 * k}" y="{HEIGHT + 15}" font-size="10" fill="{colour}">'
            f"{_e(name)}</text>"
        )
    parts.append(f'<text x="0" y="10" font-size="9">{top * 1000:.3g} ms</text></svg>')
    return "".join(parts)


def _distribution(item: dict[str, Any]) -> str:
    dist = item.get("distribution", {})
    if "edges" in dist:
        edges = dist["edges"]
        labels = ["< min"] + [f"{edges[i]:.3g}" for i in range(len(edges) - 1)] + ["> max"]
        return bars_svg(labels, dist["reference"], dist["current"])
    ref, cur = dist.get("reference", {}), dist.get("current", {})
    names = list(ref) + [k for k in cur if k not in ref]
    return bars_svg(names, [ref.get(k, 0) for k in names], [cur.get(k, 0) for k in names])


def _family(title: str, items: Sequence[dict[str, Any]]) -> str:
    if not items:
        return f"<h3>{_e(title)}</h3><p>No reference profile or no live data.</p>"
    rows = "".join(
        f'<tr class="{_e(f["verdict"])}"><td>{_e(f["name"])}</td><td>{_e(f["kind"])}</td>'
        f"<td>{_fmt(f['n'])}</td><td>{_e(f['test'])}</td><td>{_fmt(f['statistic'])}</td>"
        f"<td>{_fmt(f['p_value'])}</td><td>{_fmt(f['adjusted_p'])}</td><td>{_fmt(f['psi'])}</td>"
        f"<td>{_fmt(f.get('wasserstein'))}</td><td>{_fmt(f['unseen'])}</td>"
        f"<td><b>{_e(f['verdict'])}</b></td></tr>"
        for f in items
    )
    plots = "".join(
        f"<figure><figcaption>{_e(f['name'])} — {_e(f['verdict'])}</figcaption>"
        f"{_distribution(f)}</figure>"
        for f in items
    )
    return (
        f"<h3>{_e(title)}</h3><table><tr><th>feature</th><th>kind</th><th>rows</th><th>test</th>"
        "<th>statistic</th><th>p-value</th><th>BH-adjusted p</th><th>PSI</th>"
        "<th>Wasserstein (σ)</th><th>unseen</th><th>verdict</th></tr>"
        f"{rows}</table><div class='plots'>{plots}</div>"
    )


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
font-size:13px;text-align:right}th{background:#f4f4f4}tr.drift td{background:#fde2e1}
tr.insufficient td{color:#888}.plots{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0}figcaption{font-size:12px}.key span{padding:0 .5em;color:#fff}
"""


def report_html(data: dict[str, Any]) -> str:
    """The HTML page for a ``report_json`` document."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Slipway monitoring — {_e(data['deployment'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Monitoring report: {_e(data['deployment'])}</h1>",
        f"<p>Generated {_e(data['generated_at'])}. Window: {_e(window_words(data['window']))}."
        f" Policy: {_e(policy_words(data['policy']))}. Captures dropped: "
        f"{_fmt(data['capture_dropped'])}.</p>",
        f"<p class='key'><span style='background:{REF_COLOUR}'>reference</span>"
        f"<span style='background:{CUR_COLOUR}'>current</span></p>",
    ]
    for ref in data.get("unprofiled", []):
        parts.append(f"<p>{_e(unprofiled_words(ref))}</p>")
    if not data["versions"] and not data.get("unprofiled"):
        least = data["policy"].get("min_samples") if isinstance(data["policy"], dict) else None
        parts.append(
            "<p>No drift evaluation yet: it needs"
            f" {f'at least {least}' if least else 'enough'} captured requests in the window,"
            " and runs every drift interval.</p>"
        )
    for version in data["versions"]:
        drifted = [f["name"] for f in version["features"] if f["verdict"] == "drift"]
        parts.append(
            f"<h2>{_e(version['model'])} version {_e(version['version'])} — "
            f"{_fmt(version['rows'])} rows in window; drifted: "
            f"{_e(', '.join(drifted) or 'none')}</h2>"
        )
        parts.append(_family("Input features", version["features"]))
        parts.append(_family("Predictions", version["predictions"]))
    latency = data["latency"]
    parts.append("<h2>Latency percentiles over time</h2>")
    if latency:
        parts.append(
            lines_svg(
                {k: [p[k] for p in latency] for k in ("latency_p50", "latency_p95", "latency_p99")}
            )
        )
        first, last = _utc(latency[0]["at"]), _utc(latency[-1]["at"])
        parts.append(f"<p>{len(latency)} points from {first} to {last} (UTC).</p>")
    else:
        parts.append("<p>No traffic recorded yet.</p>")
    parts.append(
        f"<h2>Requests by outcome</h2><p>{_e(data.get('requests_period', ''))}</p>"
        "<table><tr><th>outcome</th><th>requests</th></tr>"
    )
    parts.extend(
        f"<tr><td>{_e(k)}</td><td>{v:.0f}</td></tr>"  # a count in full (_fmt: 9e+04)
        for k, v in sorted(data["requests_by_outcome"].items())
    )
    parts.append("</table><h2>Alerts</h2>")
    if data["alerts"]:
        parts.append("<table><tr><th>at (UTC)</th><th>state</th><th>message</th></tr>")
        parts.extend(
            f"<tr><td>{_e(_utc(a['at']))}</td><td>{_e(a['state'])}</td><td>{_e(a['message'])}</td></tr>"
            for a in data["alerts"]
        )
        parts.append("</table>")
    else:
        parts.append("<p>No alert events.</p>")
    parts.append("</body></html>")
    return "".join(parts)
