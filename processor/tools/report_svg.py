"""Inline SVG charts for the report page: hand-written, a few dozen lines each, no library.

Why not a charting library inlined into the page: the four charts are bars, a step curve and a
sparkline; generating them is less code than pinning, vendoring and auditing a library, the page
needs no script at all (so its Content-Security-Policy can forbid scripts outright), and the numbers
in the SVG are the report's own. Every label passes through `label()` (printable, then html.escape).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from processor.core.display import fit, printable

BAR = "#3b6fd4"
BAR_MUTED = "#9aa7bd"
ACCENT = "#d9822b"
INK = "#1d2433"
GRID = "#dde3ee"


def label(text: object, columns: int = 48) -> str:
    """An input-controlled string made safe for SVG/HTML text: escapes shown, markup escaped, cut."""
    return html.escape(fit(printable(str(text)), columns), quote=True)


def _svg(width: int, height: int, body: list[str], title: str, kind: str) -> str:
    return (
        f'<svg class="chart" data-chart="{kind}" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg"><title>{label(title, 200)}</title>'
        + "".join(body) + "</svg>"
    )


def column_chart(values: Sequence[int], first: str, last: str, title: str, kind: str = "trend") -> str:
    """Vertical bars, one per bucket, with the max on the y axis and the first/last bucket below."""
    width, height, left, bottom, top = 720, 200, 44, 24, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max(values, default=0) or 1
    n = max(len(values), 1)
    step = plot_w / n
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" stroke="{GRID}"/>',
        f'<line x1="{left}" y1="{top}" x2="{width - 8}" y2="{top}" stroke="{GRID}" stroke-dasharray="3 3"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11" fill="{INK}">{peak:,}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11" fill="{INK}">0</text>',
        f'<text x="{left}" y="{height - 6}" font-size="11" fill="{INK}">{label(first)}</text>',
        f'<text x="{width - 8}" y="{height - 6}" text-anchor="end" font-size="11" fill="{INK}">{label(last)}</text>',
    ]
    for i, v in enumerate(values):
        if v <= 0:
            continue
        h = max(1.0, plot_h * v / peak)
        body.append(
            f'<rect class="bar" x="{left + i * step + step * 0.1:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{max(step * 0.8, 1):.1f}" height="{h:.1f}" fill="{BAR}"><title>{v:,}</title></rect>'
        )
    return _svg(width, height, body, title, kind)


def bar_chart(rows: Sequence[tuple[str, int, bool]], title: str, kind: str) -> str:
    """Horizontal bars: (label, value, highlighted) per row, largest first as given."""
    width, row_h, label_w = 720, 22, 300
    height = max(row_h * len(rows) + 8, 30)
    peak = max((v for _l, v, _h in rows), default=0) or 1
    body: list[str] = []
    for i, (name, value, hi) in enumerate(rows):
        y = 4 + i * row_h
        w = max(1.0, (width - label_w - 70) * value / peak)
        body += [
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" font-size="12" fill="{INK}">{label(name, 40)}'
            "</text>",
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
            f'fill="{BAR if hi else BAR_MUTED}"/>',
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="12" fill="{INK}">{value:,}</text>',
        ]
    return _svg(width, height, body, title, kind)


def coverage_curve(cumulative: Sequence[float], recommended: int, share: float, title: str) -> str:
    """Cumulative share of would-be denies permitted by the first n additions (a step curve), with the
    recommended additions marked and the stated share as a dashed line."""
    width, height, left, bottom, top = 720, 220, 44, 26, 12
    plot_w, plot_h = width - left - 12, height - bottom - top
    n = max(len(cumulative), 1)

    def xy(i: int, c: float) -> tuple[float, float]:
        return left + plot_w * i / n, top + plot_h * (1 - c)

    points = [xy(0, 0.0)]
    for i, c in enumerate(cumulative, 1):
        points += [(xy(i, 0)[0], points[-1][1]), xy(i, c)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    sy = xy(0, share)[1]
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 12}" y2="{top + plot_h}" stroke="{GRID}"/>',
        f'<line x1="{left}" y1="{sy:.1f}" x2="{width - 12}" y2="{sy:.1f}" stroke="{ACCENT}" stroke-dasharray="4 3"/>',
        f'<text x="{width - 14}" y="{sy - 4:.1f}" text-anchor="end" font-size="11" fill="{ACCENT}">'
        f"{share * 100:g}%</text>",
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11" fill="{INK}">100%</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11" fill="{INK}">0%</text>',
        f'<text x="{left}" y="{height - 6}" font-size="11" fill="{INK}">0 additions</text>',
        f'<text x="{width - 12}" y="{height - 6}" text-anchor="end" font-size="11" fill="{INK}">{n:,}</text>',
        f'<polyline class="curve" points="{path}" fill="none" stroke="{BAR}" stroke-width="2"/>',
    ]
    if 0 < recommended <= len(cumulative):
        x, y = xy(recommended, cumulative[recommended - 1])
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{ACCENT}"><title>{recommended} recommended: '
                    f"{cumulative[recommended - 1] * 100:.1f}%</title></circle>")
    return _svg(width, height, body, title, "coverage")


def sparkline(values: Sequence[int], title: str) -> str:
    """A small trend line for a table cell."""
    width, height = 140, 28
    peak = max(values, default=0) or 1
    n = max(len(values) - 1, 1)
    pts = " ".join(f"{2 + (width - 4) * i / n:.1f},{height - 3 - (height - 6) * v / peak:.1f}"
                   for i, v in enumerate(values))
    body = [f'<polyline class="curve" points="{pts}" fill="none" stroke="{BAR}" stroke-width="1.5"/>']
    return (f'<svg class="spark" data-chart="sparkline" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{label(title, 200)}</title>'
            + "".join(body) + "</svg>")
