"""A line chart of daily activity as SVG markup, drawn on the server.

A pure function of its series: no script, no stylesheet, nothing loaded from anywhere,
so that it shows the same with JavaScript off and passes the site's Content-Security-
Policy (colours and dashes are SVG presentation attributes, not `style`). It is an image
with a title and a description for screen readers; the page shows the same figures as a
table beside it. Each currency gets a panel of its own, on its own scale: amounts in
different currencies are never drawn against one axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from xml.sax.saxutils import escape, quoteattr

WIDTH = 640
PANEL_HEIGHT = 230
LEGEND_HEIGHT = 34
MARGIN_LEFT = 78
MARGIN_RIGHT = 16
MARGIN_TOP = 30
MARGIN_BOTTOM = 44
FONT_SIZE = 13
TICKS_Y = 4
TICKS_X_MAX = 7
# Markers on each day's point while there are few enough days to tell them apart.
MARKER_DAYS_MAX = 62
# Colours told apart with the common kinds of colour blindness (Okabe and Ito), and a
# dash pattern each, so that the lines are told apart without colour too.
STYLES = (
    ("#0072B2", ""),
    ("#D55E00", "6 3"),
    ("#009E73", "2 3"),
    ("#CC79A7", "8 3 2 3"),
    ("#E69F00", "12 4"),
    ("#56B4E9", "4 2"),
)
INK = "#1f2328"
GRID = "#d0d7de"


@dataclass(frozen=True)
class Series:
    name: str
    # One value per day, in minor units.
    values: Sequence[int]


@dataclass(frozen=True)
class Panel:
    """One currency's lines: `exponent` is how many minor-unit digits the currency has."""

    currency: str
    exponent: int
    series: Sequence[Series]


def _attrs(**values: object) -> str:
    return "".join(
        f" {name.rstrip('_').replace('_', '-')}={quoteattr(str(value))}"
        for name, value in values.items()
        if value is not None and value != ""
    )


def _empty(tag: str, **values: object) -> str:
    """An element without content: `<line x1="0" .../>`."""
    return f"<{tag}{_attrs(**values)}/>"


def _text(x: float, y: float, words: str, **more: object) -> str:
    return f"<text{_attrs(x=_n(x), y=_n(y), **more)}>{escape(words)}</text>"


def _n(value: float) -> str:
    """A coordinate, short: `12.5`, `40`."""
    return f"{value:.1f}".removesuffix(".0")


def major(amount_minor: int, exponent: int) -> str:
    """An amount in major units with thousands separated, exact: `1,234.5` for 123450
    cents (trailing zeros dropped: axis labels, not prices)."""
    value = Decimal(amount_minor).scaleb(-exponent)
    text = f"{value:,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def nice_step(span: int, ticks: int = TICKS_Y) -> int:
    """A step of 1, 2 or 5 times a power of ten, in minor units, that covers `span`
    in about `ticks` steps."""
    raw = max(1, -(-span // ticks))
    magnitude: int = 10 ** (len(str(raw)) - 1)
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    raise AssertionError("unreachable")


def _scale(panel: Panel) -> tuple[int, int, int]:
    values = [value for series in panel.series for value in series.values]
    low, high = min([0, *values]), max([0, *values])
    if low == high:
        high = low + 10**panel.exponent
    step = nice_step(high - low)
    bottom = (low // step) * step
    top = -(-high // step) * step
    return bottom, top, step


def _x_labels(days: Sequence[date]) -> list[int]:
    """Which days get a label: the first, the last, and evenly between."""
    count = len(days)
    if count <= TICKS_X_MAX:
        return list(range(count))
    every = -(-(count - 1) // (TICKS_X_MAX - 1))
    picked = list(range(0, count - 1, every))
    if count - 1 - picked[-1] < every / 2:
        picked.pop()
    return [*picked, count - 1]


def _panel(panel: Panel, days: Sequence[date], top_y: float, names: Sequence[str]) -> list[str]:
    """One panel; a series' colour and dashes follow its place in `names` (the legend)."""
    plot_left = MARGIN_LEFT
    plot_right = WIDTH - MARGIN_RIGHT
    plot_top = top_y + MARGIN_TOP
    plot_bottom = top_y + PANEL_HEIGHT - MARGIN_BOTTOM
    bottom, top, step = _scale(panel)

    def y_of(value: int) -> float:
        return plot_bottom - (value - bottom) * (plot_bottom - plot_top) / (top - bottom)

    def x_of(index: int) -> float:
        if len(days) == 1:
            return (plot_left + plot_right) / 2
        return plot_left + index * (plot_right - plot_left) / (len(days) - 1)

    parts = [
        f"<g{_attrs(aria_hidden='true')}>",
        _text(plot_left, top_y + 18, f"{panel.currency}", font_weight="bold"),
    ]
    for value in range(bottom, top + 1, step):
        y = y_of(value)
        parts.append(_empty("line", x1=plot_left, x2=plot_right, y1=_n(y), y2=_n(y), stroke=GRID))
        parts.append(_text(plot_left - 6, y + 4, major(value, panel.exponent), text_anchor="end"))
    parts.append(
        _empty("line", x1=plot_left, x2=plot_right, y1=_n(y_of(0)), y2=_n(y_of(0)), stroke=INK)
    )
    for index in _x_labels(days):
        x = x_of(index)
        parts.append(
            _text(x, plot_bottom + 18, days[index].strftime("%m-%d"), text_anchor="middle")
        )
    parts.append(
        _text((plot_left + plot_right) / 2, plot_bottom + 36, "Day (UTC)", text_anchor="middle")
    )
    middle = (plot_top + plot_bottom) / 2
    parts.append(
        _text(
            16,
            middle,
            f"Amount ({panel.currency})",
            text_anchor="middle",
            transform=f"rotate(-90 16 {_n(middle)})",
        )
    )
    for series in panel.series:
        colour, dashes = STYLES[names.index(series.name) % len(STYLES)]
        points = " ".join(
            f"{_n(x_of(index))},{_n(y_of(value))}" for index, value in enumerate(series.values)
        )
        parts.append(
            _empty(
                "polyline",
                points=points,
                fill="none",
                stroke=colour,
                stroke_width=2,
                stroke_dasharray=dashes,
            )
        )
        if len(days) <= MARKER_DAYS_MAX:
            parts.extend(
                _empty("circle", cx=_n(x_of(index)), cy=_n(y_of(value)), r=3, fill=colour)
                for index, value in enumerate(series.values)
            )
    parts.append("</g>")
    return parts


def _legend(names: Sequence[str]) -> list[str]:
    parts = [f"<g{_attrs(aria_hidden='true')}>"]
    x = float(MARGIN_LEFT)
    for number, name in enumerate(names):
        colour, dashes = STYLES[number % len(STYLES)]
        y = LEGEND_HEIGHT / 2 + 2
        parts.append(
            _empty(
                "line",
                x1=_n(x),
                x2=_n(x + 24),
                y1=_n(y),
                y2=_n(y),
                stroke=colour,
                stroke_width=3,
                stroke_dasharray=dashes,
            )
        )
        parts.append(_text(x + 30, y + 4, name))
        x += 30 + 8 * len(name) + 24
    parts.append("</g>")
    return parts


def activity_chart(
    days: Sequence[date],
    panels: Sequence[Panel],
    *,
    title: str,
    description: str,
    id_prefix: str = "chart",
) -> str:
    """An `<svg role="img">` of `panels`, one below the other, each a line per series
    over `days`. With no panel (or no day) it says there is nothing to draw."""
    for panel in panels:
        for series in panel.series:
            if len(series.values) != len(days):
                raise ValueError(
                    f"series {series.name!r} has {len(series.values)} values for {len(days)} days"
                )
    drawn = [panel for panel in panels if panel.series] if days else []
    height = LEGEND_HEIGHT + PANEL_HEIGHT * max(1, len(drawn))
    title_id, desc_id = f"{id_prefix}-title", f"{id_prefix}-desc"
    parts = [
        "<svg"
        + _attrs(
            xmlns="http://www.w3.org/2000/svg",
            role="img",
            viewBox=f"0 0 {WIDTH} {height}",
            width="100%",
            aria_labelledby=f"{title_id} {desc_id}",
            font_family="system-ui, sans-serif",
            font_size=FONT_SIZE,
            fill=INK,
        )
        + ">",
        f"<title{_attrs(id=title_id)}>{escape(title)}</title>",
        f"<desc{_attrs(id=desc_id)}>{escape(description)}</desc>",
    ]
    if not drawn:
        parts.append(_text(WIDTH / 2, height / 2, "No activity to show.", text_anchor="middle"))
    else:
        names = list(dict.fromkeys(series.name for panel in drawn for series in panel.series))
        parts.extend(_legend(names))
        for number, panel in enumerate(drawn):
            parts.extend(_panel(panel, days, LEGEND_HEIGHT + number * PANEL_HEIGHT, names))
    parts.append("</svg>")
    return "\n".join(parts)
