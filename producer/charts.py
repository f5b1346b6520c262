"""Inline SVG line charts of pass@n and the two-attempt score against n (log2 axis): no scripts, no assets.

Each curve draws two polylines in one colour: pass@n solid (`polyline.pass-at-n`) and the
two-attempt score dashed (`polyline.score-at-n`); both carry `data-series` (the line's name),
`data-epoch` ("all" for all epochs together) and `data-points` ("n:value ..."), so a page's
lines can be read back without parsing coordinates.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from arcsynth.common.passk import Curve

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
WIDTH, HEIGHT = 680, 320
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 16, 44


def _x(n: int, max_n: int) -> float:
    span = WIDTH - LEFT - RIGHT
    if max_n <= 1:
        return LEFT + span / 2
    return LEFT + span * math.log2(n) / math.log2(max_n)


def _y(v: float, top: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - v / top)


def y_top(values: Sequence[float]) -> float:
    """The y axis' top: the smallest of 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1 that holds every value."""
    peak = max(values, default=0.0)
    return next((t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5) if peak <= t), 1.0)


def _axes(max_n: int, top: float) -> list[str]:
    out = [f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
           'fill="#fff" stroke="#bbb"/>']
    for v in (0.0, top / 4, top / 2, 3 * top / 4, top):
        y = _y(v, top)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{v:g}</text>')
    ticks, n = [], 1
    while n <= max_n:
        ticks.append(n)
        n *= 2
    if ticks[-1] != max_n:
        ticks.append(max_n)
    for t in ticks:
        x = _x(t, max_n)
        out.append(f'<line x1="{x:.1f}" y1="{HEIGHT - BOTTOM}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM + 4}" stroke="#666"/>'
                   f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11">{t}</text>')
    out.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle" font-size="12">'
               "n (samples per task, log2 scale)</text>")
    return out


def _polyline(curve: Curve, values: Sequence[float], kind: str, colour: str, max_n: int, top: float, name: str,
              under: bool = False) -> str:
    pts = " ".join(f"{_x(n, max_n):.1f},{_y(v, top):.1f}" for n, v in zip(curve.n, values))
    data = " ".join(f"{n}:{v:.6g}" for n, v in zip(curve.n, values))
    epoch = "all" if curve.epoch is None else str(curve.epoch)
    dash = ' stroke-dasharray="6 4"' if kind == "score-at-n" else ""
    width = ' stroke-width="4" stroke-opacity="0.45"' if under else ' stroke-width="2"'  # under: others show on top
    dots = "".join(f'<circle cx="{_x(n, max_n):.1f}" cy="{_y(v, top):.1f}" r="2.5" fill="{colour}"><title>'
                   f"{html.escape(name)}: {kind.replace('-', ' ').replace('at n', '@')} n={n}: {v:.3f}</title></circle>"
                   for n, v in zip(curve.n, values))
    return (f'<polyline class="curve {kind}" data-series="{html.escape(name)}" data-epoch="{epoch}" '
            f'data-points="{data}" points="{pts}" fill="none" stroke="{colour}"{width}{dash}/>{dots}')


def curves_svg(curves: Sequence[Curve], names: Sequence[str] | None = None, chart_id: str = "curves") -> str:
    """One chart of `curves` (named by `names`, default their labels); a note when there is nothing to draw."""
    names = list(names) if names is not None else [c.label for c in curves]
    drawn = [(c, name) for c, name in zip(curves, names) if c.n]
    if not drawn:
        return f'<p class="no-chart" id="{chart_id}">No curve: the test outputs are unknown or nothing was sampled.</p>'
    max_n = max(c.n[-1] for c, _ in drawn)
    top = y_top([v for c, _ in drawn for v in (*c.pass_at_n, *c.score_at_n)])
    legend_h = 18 * len(drawn) + 40
    parts = [f'<svg class="chart" id="{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
             f'height="{HEIGHT + legend_h}" viewBox="0 0 {WIDTH} {HEIGHT + legend_h}" font-family="sans-serif">',
             *_axes(max_n, top)]
    for i, (c, name) in enumerate(drawn):
        colour = COLOURS[i % len(COLOURS)]
        under = c.epoch is None and any(d.epoch is not None for d, _ in drawn)  # all epochs: faint, under the epochs' lines
        parts.append(_polyline(c, c.pass_at_n, "pass-at-n", colour, max_n, top, name, under))
        parts.append(_polyline(c, c.score_at_n, "score-at-n", colour, max_n, top, name, under))
        y = HEIGHT + 14 + 18 * i
        parts.append(f'<line x1="{LEFT}" y1="{y}" x2="{LEFT + 24}" y2="{y}" stroke="{colour}" stroke-width="2"/>'
                     f'<text class="legend" x="{LEFT + 30}" y="{y + 4}" font-size="12">{html.escape(name)} '
                     f"({c.tasks} tasks)</text>")
    y = HEIGHT + 14 + 18 * len(drawn)
    parts.append(f'<text x="{LEFT}" y="{y + 4}" font-size="12" fill="#555">solid: pass@n, a program correct on every '
                 f'test output among n samples</text><text x="{LEFT}" y="{y + 20}" font-size="12" fill="#555">'
                 "dashed: the two-attempt score with the first n samples</text>")
    parts.append("</svg>")
    return "".join(parts)
