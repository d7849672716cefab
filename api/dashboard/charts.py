"""Charts as SVG, drawn on the server: no chart library, nothing from a CDN. Pure (no I/O).

    svg = panels("id", "Title", "what it shows", Axis("window", ...), [Panel(...), ...], width=640)
    svg = bars("id", "Title", "what it shows", [Group(...), ...], width=640)

A chart is drawn at the pixel width the page asks for (its card's width), so its text stays at
TEXT px on a phone and on a wide screen alike. It is accessible: role="img" with a <title> and
a <desc> that says what the data is in words; every point's value is in its own <title> (a
hover) where a series is short enough (POINT_TITLES). A series with no value yet reads "no data
yet" in its panel, never an error. Colours are the dashboard's (dashboard.css); text takes the
page's colour (currentColor). All text from the caller is escaped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

TEXT = 12  # px
PANEL_H = 110  # the plot area of one panel, px
LEFT, RIGHT = 46, 14  # margins, px (y tick labels on the left)
POINT_TITLES = 300  # a series longer than this is drawn as a line alone (no hover per point)
MIN_W, MAX_W = 280, 1400
COLOURS = ("#3b82f6", "#e0a526", "#22a05b", "#c53030", "#7c3aed", "#0891b2", "#db2777", "#65a30d")
MARK_STYLE = {  # the quality guard's marks on the render's windows
    "rerendered": ("#e0a526", "re-rendered"),
    "flagged": ("#dc3d3d", "flagged"),
    "reanchored": ("#17212f", "re-anchored"),
}
NO_DATA = "no data yet"


@dataclass
class Series:
    name: str
    points: list[tuple[float, float | None]]  # (x, y); y None: no value there (a gap)
    colour: str = ""  # empty: the next of COLOURS
    unit: str = ""
    dashed: bool = False


@dataclass
class Bound:
    value: float
    label: str  # e.g. "bound 6 (above: drift)"


@dataclass
class Panel:
    label: str  # the y axis' name and unit, written above the panel
    series: list[Series]
    bound: Bound | None = None
    y_min: float | None = 0.0  # None: from the data
    y_max: float | None = None  # None: from the data (and the bound)
    percent: bool = False  # y as a share, labelled in %


@dataclass
class Axis:
    label: str
    lo: float
    hi: float
    ticks: list[tuple[float, str]] = field(default_factory=list)  # empty: nice numbers
    marks: list[tuple[float, str]] = field(default_factory=list)  # (x, kind of MARK_STYLE)
    whole: bool = False  # x takes whole numbers only (windows): no tick between them


@dataclass
class Group:
    """One comparison in a bar chart: e.g. "GPU seconds", estimate against actual so far."""
    label: str
    unit: str
    bars: list[tuple[str, float | None, str]]  # (name, value, colour); None: not known
    tick: tuple[str, float] | None = None  # a mark across the group's first bar, e.g. "expected by now"


def clamp_width(width: int | None) -> int:
    try:
        w = int(width or 640)
    except (TypeError, ValueError):
        w = 640
    return max(MIN_W, min(MAX_W, w))


def nice_ticks(lo: float, hi: float, count: int = 4, min_step: float = 0.0) -> list[float]:
    """About `count` round numbers spanning lo..hi (1, 2, 2.5 or 5 times a power of ten; a step
    of at least `min_step`: 1 for whole numbers such as windows)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw) if min_step >= 1 else \
        next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    step = max(step, min_step)
    first = math.floor(lo / step) * step
    out, t = [], first
    while t <= hi + step * 1e-9:
        out.append(round(t, 10))
        t += step
    if out[-1] < hi:
        out.append(round(out[-1] + step, 10))
    return out


def fmt(v: float, percent: bool = False) -> str:
    if percent:
        return f"{v * 100:.0f}%"
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v / 1000:.1f}k".replace(".0k", "k")
    if abs(v) >= 10 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.2f}".rstrip("0").rstrip(".") if abs(v) < 1 else f"{v:.1f}"


def _head(chart_id: str, title: str, desc: str, width: int, height: int) -> list[str]:
    cid = escape(chart_id, quote=True)
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{cid}" role="img" '
            f'aria-labelledby="{cid}-t {cid}-d" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-size="{TEXT}" '
            f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" fill="currentColor">',
            f'<title id="{cid}-t">{escape(title)}</title>', f'<desc id="{cid}-d">{escape(desc)}</desc>']


def _legend(items: list[tuple[str, str, bool]], width: int, y: float) -> tuple[list[str], float]:
    """Legend entries (name, colour, dashed) laid out in rows across `width`; returns the
    elements and the height used."""
    out, x, row_h = [], LEFT, TEXT + 6
    for name, colour, dashed in items:
        w = 22 + len(name) * TEXT * 0.58 + 14
        if x + w > width - RIGHT and x > LEFT:
            x, y = LEFT, y + row_h
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        out.append(f'<g class="legend-item"><line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 16:.1f}" y2="{y - 4:.1f}" '
                   f'stroke="{colour}" stroke-width="3"{dash}/><text x="{x + 22:.1f}" y="{y:.1f}">{escape(name)}</text></g>')
        x += w
    return out, (y + row_h) if items else y


def _x_ticks(axis: Axis, width: int) -> list[tuple[float, str]]:
    if axis.ticks:
        ticks = axis.ticks
    else:
        room = max(2, int((width - LEFT - RIGHT) / 70))
        ticks = [(t, fmt(t)) for t in nice_ticks(axis.lo, axis.hi, room, 1.0 if axis.whole else 0.0)
                 if axis.lo <= t <= axis.hi]
    # keep labels apart: about 60 px each
    step = max(1, math.ceil(len(ticks) * 60 / max(1, width - LEFT - RIGHT)))
    return ticks[::step]


def panels(chart_id: str, title: str, desc: str, axis: Axis, rows: list[Panel], width: int | None = 640,
           legend: bool = True) -> str:
    """Panels one above the other over a shared x axis (windows of a render, hours of a day);
    each with its series, its bound (a dashed line, labelled) and the axis' marks (vertical
    lines: re-rendered, flagged, re-anchored windows). The legend names the series (unless
    `legend` is False: a panel of one series, named by its label) and the marks."""
    width = clamp_width(width)
    colours = iter(COLOURS * 4)
    for p in rows:
        for s in p.series:
            s.colour = s.colour or next(colours)
    legend_items = list(dict.fromkeys((s.name, s.colour, s.dashed) for p in rows for s in p.series)) if legend else []
    kinds = list(dict.fromkeys(kind for _, kind in axis.marks if kind in MARK_STYLE))
    legend_items += [(MARK_STYLE[k][1], MARK_STYLE[k][0], True) for k in kinds]
    drawn, top = _legend(legend_items, width, TEXT + 4)
    top += 4
    gap = TEXT * 2 + 10  # above each panel: its label
    height = int(top + len(rows) * (PANEL_H + gap) + TEXT * 3 + 8)
    out = _head(chart_id, title, desc, width, height) + drawn
    span = (axis.hi - axis.lo) or 1.0
    x_of = lambda x: LEFT + (x - axis.lo) / span * (width - LEFT - RIGHT)  # noqa: E731
    y0 = top
    for p in rows:
        y0 += gap
        out += _panel(p, y0, width, x_of, axis)
        y0 += PANEL_H
    for x, label in _x_ticks(axis, width):
        out.append(f'<text x="{x_of(x):.1f}" y="{y0 + TEXT + 4:.1f}" text-anchor="middle">{escape(label)}</text>')
    out.append(f'<text x="{(LEFT + width - RIGHT) / 2:.1f}" y="{y0 + TEXT * 2 + 10:.1f}" text-anchor="middle" '
               f'class="axis-label">{escape(axis.label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _panel(p: Panel, top: float, width: int, x_of, axis: Axis) -> list[str]:
    bottom = top + PANEL_H
    out = [f'<text x="{LEFT - 40}" y="{top - 8:.1f}" font-weight="600" class="axis-label">{escape(p.label)}</text>',
           f'<rect x="{LEFT}" y="{top:.1f}" width="{width - LEFT - RIGHT}" height="{PANEL_H}" fill="none" '
           f'stroke="#dfe4eb"/>']
    values = [y for s in p.series for _, y in s.points if y is not None and math.isfinite(y)]
    if not values:
        out.append(f'<text x="{(LEFT + width - RIGHT) / 2:.1f}" y="{top + PANEL_H / 2 + 4:.1f}" text-anchor="middle" '
                   f'class="no-data" fill="#5d6b7e">{NO_DATA}</text>')
        return out
    extra = [p.bound.value] if p.bound else []
    lo = p.y_min if p.y_min is not None else min(values + extra)
    hi = p.y_max if p.y_max is not None else max(values + extra)
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    ticks = nice_ticks(lo, hi, 3)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    y_of = lambda y: bottom - (min(max(y, lo), hi) - lo) / (hi - lo) * PANEL_H  # noqa: E731
    for t in ticks:
        y = y_of(t)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{width - RIGHT}" y2="{y:.1f}" stroke="#eef1f5"/>'
                   f'<text x="{LEFT - 5}" y="{y + 4:.1f}" text-anchor="end" fill="#5d6b7e">{fmt(t, p.percent)}</text>')
    for x, kind in axis.marks:
        colour, name = MARK_STYLE.get(kind, ("#5d6b7e", kind))
        out.append(f'<line class="mark {escape(kind, quote=True)}" x1="{x_of(x):.1f}" y1="{top:.1f}" x2="{x_of(x):.1f}" '
                   f'y2="{bottom:.1f}" stroke="{colour}" stroke-width="2" stroke-dasharray="3 3">'
                   f'<title>{escape(name)}: {fmt(x)}</title></line>')
    if p.bound:
        y = y_of(p.bound.value)
        out.append(f'<line class="bound" x1="{LEFT}" y1="{y:.1f}" x2="{width - RIGHT}" y2="{y:.1f}" stroke="#c53030" '
                   f'stroke-width="1.5" stroke-dasharray="6 4"><title>{escape(p.bound.label)}</title></line>'
                   f'<text x="{width - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#c53030" '
                   f'stroke="#fff" stroke-width="3" paint-order="stroke">'
                   f'{escape(p.bound.label)}</text>')
    for s in p.series:
        out += _series(s, x_of, y_of, p.percent)
    return out


def _series(s: Series, x_of, y_of, percent: bool) -> list[str]:
    dash = ' stroke-dasharray="5 4"' if s.dashed else ""
    runs, run = [], []
    for x, y in s.points:  # a missing value breaks the line
        if y is None or not math.isfinite(y):
            if run:
                runs.append(run)
            run = []
        else:
            run.append((x_of(x), y_of(y)))
    if run:
        runs.append(run)
    out = [f'<g class="series" data-name="{escape(s.name, quote=True)}">']
    for r in runs:
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in r)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>')
    shown = [(x, y) for x, y in s.points if y is not None and math.isfinite(y)]
    if len(shown) <= POINT_TITLES:
        for x, y in shown:
            value = fmt(y, percent) + (f" {s.unit}" if s.unit and not percent else "")
            out.append(f'<circle class="pt" cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="3" fill="{s.colour}" '
                       f'data-x="{x:g}" data-y="{y:g}"><title>{escape(s.name)} at {fmt(x)}: {escape(value)}</title></circle>')
    out.append("</g>")
    return out


def bars(chart_id: str, title: str, desc: str, groups: list[Group], width: int | None = 640) -> str:
    """Horizontal bars, a group per quantity (e.g. GPU seconds: estimate, actual so far), each
    bar labelled with its value; a group's tick marks a point on its first bar."""
    width = clamp_width(width)
    bar_h, label_w = 18, min(170, int(width * 0.34))
    rows = sum(len(g.bars) for g in groups)
    height = int(12 + len(groups) * (TEXT + 14) + rows * (bar_h + 8) + 8)
    out = _head(chart_id, title, desc, width, height)
    known = [v for g in groups for _, v, _ in g.bars if v is not None]
    if not known:
        out.append(f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" class="no-data" '
                   f'fill="#5d6b7e">{NO_DATA}</text></svg>')
        return "\n".join(out)
    y = 8.0
    room = width - label_w - RIGHT - 70  # the value's label after the bar
    for g in groups:
        y += TEXT + 6
        out.append(f'<text x="4" y="{y:.1f}" font-weight="600" class="axis-label">{escape(g.label)} ({escape(g.unit)})</text>')
        y += 8
        top_value = max([v for _, v, _ in g.bars if v is not None] + ([g.tick[1]] if g.tick else []) + [1e-9])
        first_y = y
        for name, value, colour in g.bars:
            out.append(f'<text x="{label_w - 6}" y="{y + bar_h - 5:.1f}" text-anchor="end">{escape(name)}</text>')
            if value is None:
                out.append(f'<text x="{label_w}" y="{y + bar_h - 5:.1f}" fill="#5d6b7e">not known</text>')
            else:
                w = max(1.0, value / top_value * room)
                out.append(f'<rect class="bar" x="{label_w}" y="{y:.1f}" width="{w:.1f}" height="{bar_h}" rx="3" '
                           f'fill="{colour}" data-value="{value:g}"><title>{escape(name)}: {fmt(value)} '
                           f'{escape(g.unit)}</title></rect><text x="{label_w + w + 5:.1f}" y="{y + bar_h - 5:.1f}">'
                           f'{fmt(value)} {escape(g.unit)}</text>')
            y += bar_h + 8
        if g.tick:
            name, value = g.tick
            tx = label_w + value / top_value * room
            out.append(f'<line class="tick" x1="{tx:.1f}" y1="{first_y - 3:.1f}" x2="{tx:.1f}" y2="{first_y + bar_h + 3:.1f}" '
                       f'stroke="#17212f" stroke-width="2"><title>{escape(name)}: {fmt(value)} {escape(g.unit)}</title></line>')
    out.append("</svg>")
    return "\n".join(out)
