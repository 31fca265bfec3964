"""The soak's output: a JSON-lines timeline, a rendered summary, and an SVG plot of throughput,
latency and fault windows over time (no plotting library: the SVG is written by hand)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from processor.core.display import printable
from tests.support.soak_nemesis import KINDS, Fault
from tests.support.soak_world import first_commit_after


class Timeline:
    """Append-only JSON lines, one per happening, each with `t` (seconds since the soak began)."""

    def __init__(self, path: Path, clock: float) -> None:
        self.path, self.clock = path, clock
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def write(self, what: str, **fields: Any) -> None:
        line = json.dumps({"t": round(time.monotonic() - self.clock, 3), "what": what, **fields}, default=str)
        with self.lock, self.path.open("a") as fh:
            fh.write(line + "\n")


def recovery(fault: Fault, rises: dict[str, list[tuple[float, float]]], until: float,
             limit_s: float) -> float | None:
    """Seconds from the fault's end until every affected instance committed again (the scrape that
    saw its committed counter rise, with the scrape before it after the end); None: not within
    `limit_s` (or the soak ended first)."""
    if fault.end is None or not fault.affected:
        return None
    worst = 0.0
    for name in fault.affected:
        seen = first_commit_after(rises, name, fault.end)
        if seen is None or seen - fault.end > limit_s:
            return None
        worst = max(worst, seen - fault.end)
    return round(worst, 2)


def summary(seed: int, figures: dict[str, Any], faults: list[dict[str, Any]], verdict: Any) -> str:
    """The rendered summary: settings, figures, faults by kind, the verdict and the first differences."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for f in faults:
        by_kind.setdefault(f["kind"], []).append(f)
    lines = [f"soak seed {seed} (replay: scripts/soak --seed {seed} --duration {figures['duration_s']:.0f}s)",
             *(f"  {k}: {v}" for k, v in figures.items()), "faults (kind: count, worst recovery s, errors):"]
    for kind, rows in sorted(by_kind.items()):
        rec = [r["recovery_s"] for r in rows if r.get("recovery_s") is not None]
        errors = sum(1 for r in rows if r.get("error"))
        lines.append(f"  {kind}: {len(rows)}, worst recovery {max(rec) if rec else '-'}, errors {errors}")
    v = verdict
    lines += [f"checked: {v.attempts} attempts, {v.events_checked} eval events (expected {v.events_expected}), "
              f"{v.dead_checked} dead letters (expected {v.dead_expected}); aborted records hidden from "
              f"read_committed: {v.aborted_records}",
              f"lost {v.lost}, duplicated {v.duplicated}, unexpected {v.unexpected}, content mismatches "
              f"{v.mismatched}, uncommitted visible {v.uncommitted_visible}",
              f"counters: {v.counters}",
              f"SIGTERM exits 1 allowed by the contract (Kafka unreachable at the stop): {v.exits_unreachable}",
              "RESULT: " + ("PASS" if v.ok else "FAIL")]
    if not v.ok:
        lines += [f"  SIGTERM exits: {v.bad_exits}", f"  counters above the output: {v.counter_excess}",
                  f"  problems: {v.problems}", f"  differences by kind: {dict(v.diff_kinds)}",
                  "  differences by input partition: " + ", ".join(
                      f"{p}: {n} at offsets {lo}-{hi}" for p, (n, lo, hi) in sorted(v.diff_ranges.items())),
                  f"  differences on accounts with out-of-order updated_at churn: {v.diffs_out_of_order} of "
                  f"{sum(v.diff_kinds.values())} (see docs/guarantees.md, Soak: what it found)",
                  f"  first {len(v.diffs)} differences (in input order):"]
        lines += [f"    {printable(json.dumps(d, default=str))}" for d in v.diffs]
        lines += ["  fault schedule:"] + [f"    {json.dumps(f)}" for f in faults]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The plot

W, LEFT, RIGHT, PANEL, GAP = 1200, 70, 20, 170, 40
COLOURS = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#1f77b4", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
           "#2ca02c", "#393b79"]


def _path(points: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))


def _axis(y0: float, label: str, top: float, unit: str) -> list[str]:
    out = [f'<text x="10" y="{y0 - PANEL - 8}" font-size="13" font-weight="bold">{escape(label)}</text>',
           f'<line x1="{LEFT}" y1="{y0}" x2="{W - RIGHT}" y2="{y0}" stroke="#444"/>',
           f'<line x1="{LEFT}" y1="{y0 - PANEL}" x2="{LEFT}" y2="{y0}" stroke="#444"/>']
    for frac in (0, 0.5, 1):
        y = y0 - frac * PANEL
        out.append(f'<text x="{LEFT - 6}" y="{y + 4}" font-size="10" text-anchor="end">{top * frac:.0f}{unit}</text>')
    return out


def plot(path: Path, seconds: dict[int, Any], rates: dict[str, dict[int, int]], faults: list[Fault],
         duration: float, seed: int) -> None:
    """Three panels over soak time, from the start of the load: attempts sent and committed and output
    records per second; the worst end-to-end latency per second; a row per fault kind, a bar per fault."""
    span = max(duration, max(seconds, default=1), 1.0)
    sent = rates["attempts sent"]
    t0 = max(0, min((t for t, n in sent.items() if n), default=0) - 2)

    def x(t: float) -> float:
        return LEFT + (W - LEFT - RIGHT) * max(0.0, t - t0) / max(1.0, span - t0)

    kinds = list(KINDS)
    rows_h = 16 * len(kinds) + 20
    h = 60 + 2 * (PANEL + GAP) + rows_h + 40
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif">',
           f'<rect width="{W}" height="{h}" fill="white"/>',
           f'<text x="{W / 2}" y="20" font-size="15" text-anchor="middle">access-eval soak, seed {seed}, '
           f'{duration:.0f} s</text>']
    y0 = 60 + PANEL
    out = {t: s.events + s.dead for t, s in seconds.items()}
    series_list = ((sent, "#999"), (rates["attempts committed"], "#1f77b4"), (out, "#2ca02c"))
    # Catch-up bursts after an outage reach many times the send rate: clipped at 3x, so the rest stays legible.
    top = max(1, 3 * max(sent.values(), default=1))
    svg += _axis(y0, "per second: attempts sent (grey), attempts committed (blue, counters), eval events + dead "
                 "letters visible to read_committed (green); clipped at 3x the send rate", top, "")
    for series, colour in series_list:
        pts = [(x(t), y0 - PANEL * min(series.get(t, 0), top) / top) for t in range(t0, int(span) + 1)]
        svg.append(f'<path d="{_path(pts)}" fill="none" stroke="{colour}" stroke-width="1.2"/>')
    y1 = y0 + GAP + PANEL
    lat = {t: s.latency_max_ms / 1000 for t, s in seconds.items() if s.latency_max_ms}
    ltop = max([*lat.values(), 1.0])
    svg += _axis(y1, "worst end-to-end latency per second (s): publication to committed output", ltop, "s")
    svg += [f'<circle cx="{x(t):.1f}" cy="{y1 - PANEL * v / ltop:.1f}" r="1.6" fill="#d62728"/>'
            for t, v in sorted(lat.items())]
    y2 = y1 + GAP
    svg.append(f'<text x="10" y="{y2}" font-size="13" font-weight="bold">faults (one row per kind)</text>')
    for i, kind in enumerate(kinds):
        ry = y2 + 8 + 16 * i
        svg.append(f'<text x="{LEFT - 6}" y="{ry + 11}" font-size="10" text-anchor="end">{kind}</text>')
        for f in (f for f in faults if f.kind == kind):
            end = f.end if f.end is not None else span
            width = max(1.0, x(end) - x(f.start))
            svg.append(f'<rect x="{x(f.start):.1f}" y="{ry}" width="{width:.1f}" height="12" opacity="0.8" '
                       f'fill="{COLOURS[i % len(COLOURS)]}"><title>#{f.id} {escape(f.target)}</title></rect>')
            for py in (y0 - PANEL, y1 - PANEL):
                svg.append(f'<rect x="{x(f.start):.1f}" y="{py}" width="{width:.1f}" '
                           f'height="{PANEL}" fill="{COLOURS[i % len(COLOURS)]}" opacity="0.06"/>')
    axis_y = y2 + rows_h
    for t in range(t0 // 10 * 10 + 10, int(span) + 1, max(10, int((span - t0) / 12) // 10 * 10)):
        svg.append(f'<text x="{x(t):.1f}" y="{axis_y + 14}" font-size="10" text-anchor="middle">{t}s</text>')
    svg.append("</svg>")
    path.write_text("\n".join(svg))


def fault_counts(faults: list[Fault]) -> dict[str, int]:
    return dict(Counter(f.kind for f in faults))
