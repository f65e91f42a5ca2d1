"""Inline SVG charts for the dashboard: pure functions from numbers to markup.

No chart library and no script: the pages render offline, print, and cost nothing to load.
Every label is escaped; callers pass plain numbers and names.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

_REFERENCE = "#8a94a6"
_LIVE = "#2563eb"


def _num(value: float) -> str:
    return f"{value:.1f}"


def bars(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    width: int = 420,
    height: int = 160,
) -> Markup:
    """Grouped bars: for each label, one bar per series (values as shares of their series'
    total, so a reference of 10,000 rows and a live window of 200 compare)."""
    colors = [_REFERENCE, _LIVE, "#16a34a", "#dc2626"]
    shares: list[list[float]] = []
    for _, values in series:
        total = float(sum(values)) or 1.0
        shares.append([v / total for v in values])
    top = max((max(s) for s in shares if s), default=0.0) or 1.0
    n = max(len(labels), 1)
    pad, base = 4, height - 18
    group = (width - 2 * pad) / n
    bar = max(group / (len(series) + 1), 1.0)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="0" y1="{base}" x2="{width}" y2="{base}" stroke="#ccc"/>',
    ]
    for i, label in enumerate(labels):
        x0 = pad + i * group
        for j, values in enumerate(shares):
            value = values[i] if i < len(values) else 0.0
            h = (base - 8) * value / top
            parts.append(
                f'<rect x="{_num(x0 + j * bar)}" y="{_num(base - h)}" width="{_num(bar)}"'
                f' height="{_num(h)}" fill="{colors[j % len(colors)]}">'
                f"<title>{escape(series[j][0])} {escape(label)}: {value:.1%}</title></rect>"
            )
        if n <= 12:
            parts.append(
                f'<text x="{_num(x0 + group / 2)}" y="{height - 4}" font-size="9"'
                f' text-anchor="middle">{escape(label[:10])}</text>'
            )
    for j, (name, _) in enumerate(series):
        parts.append(
            f'<text x="{width - 4}" y="{12 + 12 * j}" font-size="10" text-anchor="end"'
            f' fill="{colors[j % len(colors)]}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def line(
    points: Sequence[tuple[float, float | None]],
    *,
    title: str,
    unit: str = "",
    width: int = 420,
    height: int = 120,
) -> Markup:
    """A line over ``(x, y)`` points; None breaks the line (no data in that interval)."""
    known = [(x, y) for x, y in points if y is not None]
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    if len(known) < 2:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="11"'
            ' fill="#888">not enough data yet</text></svg>'
        )
        return Markup("".join(parts))
    xs = [x for x, _ in known]
    ys = [y for _, y in known]
    x_min, x_max = min(xs), max(xs)
    y_max = max(ys) or 1.0
    span = (x_max - x_min) or 1.0

    def at(x: float, y: float) -> str:
        left = 4 + (width - 8) * (x - x_min) / span
        down = height - 14 - (height - 28) * y / y_max
        return f"{_num(left)},{_num(down)}"

    path = " ".join(at(x, y) for x, y in known)
    parts.append(f'<polyline fill="none" stroke="{_LIVE}" stroke-width="1.5" points="{path}"/>')
    parts.append(
        f'<text x="4" y="10" font-size="10" fill="#555">max {y_max:.3g}{escape(unit)}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def split(weights: Sequence[tuple[str, float]], *, width: int = 240, height: int = 14) -> Markup:
    """A horizontal bar of traffic shares in percent, labelled by version."""
    colors = [_LIVE, "#f59e0b", "#16a34a"]
    parts = [
        f'<svg class="split" role="img" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    x = 0.0
    for i, (label, weight) in enumerate(weights):
        w = width * max(0.0, min(weight, 100.0)) / 100.0
        parts.append(
            f'<rect x="{_num(x)}" y="0" width="{_num(w)}" height="{height}"'
            f' fill="{colors[i % len(colors)]}">'
            f"<title>v{escape(label)}: {weight:.1f}%</title></rect>"
        )
        x += w
    parts.append("</svg>")
    return Markup("".join(parts))
