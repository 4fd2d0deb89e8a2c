"""The dashboard's charts, drawn on the server as inline SVG (no script, no library).

Two charts: activities per hour by activityType over the last two days (stacked bars),
and open alerts by severity over the last week (stacked areas, one step per hour). Each
is an ``<svg>`` with a ``viewBox`` (it scales to the width it gets, a phone's included),
a ``<title>`` and ``<desc>`` that screen readers announce, and a ``<title>`` on every
bar or area as its tooltip. Colours come from classes that dashboard.css paints: a
severity in its colour everywhere on the dashboard, activityTypes in a palette. Every
text that came from a sender is escaped, and characters XML cannot hold are replaced.

The series are computed at most once a minute per database (:data:`CACHE_SECONDS`):
a reload, or several technicians' pages, do not repeat the queries.
"""

from __future__ import annotations

import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from app.activities.charts import HourlyChart, activity_rate
from app.alerts.charts import open_alerts
from app.state import AppState
from app.storage.db import Database

CACHE_SECONDS = 60.0
# The drawing's own units; the page scales it to its width.
WIDTH, HEIGHT = 400, 200
LEFT, RIGHT, TOP, BOTTOM = 34, 6, 8, 22
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
Y_TICKS = 4
LABEL_CHARS = 40
# XML 1.0 cannot hold these even escaped (nor can an HTML parser be trusted with them).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def label_text(value: str | None, *, none: str = "(none)") -> str:
    """A stored value as a chart label: XML-safe characters, at most :data:`LABEL_CHARS`
    long (a longer one ends in an ellipsis); ``none`` for no value."""
    if value is None:
        return none
    text = _NOT_XML.sub("\ufffd", value)
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


@dataclass(frozen=True)
class LegendItem:
    """One entry of a chart's legend: its label, the class that paints its swatch, and
    the figure beside it (the window's total, or the number open now)."""

    label: str
    css: str
    value: int


@dataclass(frozen=True)
class ChartView:
    """A chart as the page shows it: the SVG and its legend."""

    svg: Markup
    legend: tuple[LegendItem, ...]
    caption: str


def _nice_step(largest: int) -> int:
    """A round step (1, 2 or 5 times a power of ten) for :data:`Y_TICKS` gridlines up to
    at least ``largest``."""
    rough = max(1.0, largest / Y_TICKS)
    power = 10 ** math.floor(math.log10(rough))
    for factor in (1, 2, 5, 10):
        if factor * power >= rough:
            return int(factor * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _compact(count: int) -> str:
    """A gridline's figure short enough for the margin: ``2,500``, ``40k``, ``1.5M``."""
    if count < 10_000:
        return f"{count:,}"
    if count < 1_000_000:
        return f"{count / 1000:g}k"
    return f"{count / 1_000_000:g}M"


def _hour_label(start: float) -> str:
    """``Tue 02`` at midnight (UTC), else ``18:00``."""
    moment = time.gmtime(start)
    return time.strftime("%a %d" if moment.tm_hour == 0 else "%H:00", moment)


def _frame(
    chart: HourlyChart, top: int, label_every: int, label: Callable[[float], str]
) -> list[str]:
    """Gridlines with their figures and the time axis' labels."""
    parts = []
    step = _nice_step(top)
    for tick in range(Y_TICKS + 1):
        y = TOP + PLOT_HEIGHT - PLOT_HEIGHT * tick / Y_TICKS
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_num(y)}" y2="{_num(y)}"/>'
            f'<text class="tick" x="{LEFT - 4}" y="{_num(y + 4)}" text-anchor="end">'
            f"{_compact(tick * step)}</text>"
        )
    width = PLOT_WIDTH / len(chart.hours)
    for i, start in enumerate(chart.hours):
        if time.gmtime(start).tm_hour % label_every == 0:
            x = LEFT + i * width
            parts.append(
                f'<line class="axis" x1="{_num(x)}" x2="{_num(x)}" y1="{TOP + PLOT_HEIGHT}" '
                f'y2="{TOP + PLOT_HEIGHT + 3}"/>'
                f'<text class="tick" x="{_num(x)}" y="{HEIGHT - 6}" text-anchor="middle">'
                f"{escape(label(start))}</text>"
            )
    return parts


def _svg(chart_id: str, title: str, description: str, body: Sequence[str]) -> Markup:
    return Markup(
        f'<svg class="chart" id="{chart_id}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>' + "".join(body) + "</svg>"
    )


def _scale(top: int) -> float:
    """Drawing units per counted item: :data:`Y_TICKS` gridlines :func:`_nice_step` apart."""
    return PLOT_HEIGHT / (_nice_step(top) * Y_TICKS)


def _empty_note(text: str) -> str:
    return (
        f'<text class="empty-note" x="{LEFT + PLOT_WIDTH / 2:.0f}" '
        f'y="{TOP + PLOT_HEIGHT / 2:.0f}" text-anchor="middle">{escape(text)}</text>'
    )


def _when(start: float) -> str:
    return time.strftime("%a %d %b %H:00 UTC", time.gmtime(start))


def rate_view(chart: HourlyChart) -> ChartView:
    """Activities per hour as stacked bars, the busiest activityType at the bottom."""
    totals = chart.totals() if chart.series else tuple(0 for _ in chart.hours)
    top = max(totals, default=0)
    scale = _scale(top)
    width = PLOT_WIDTH / len(chart.hours)
    labels = [label_text("other" if s.other else s.key) for s in chart.series]
    classes = ["series-other" if s.other else f"series-{n}" for n, s in enumerate(chart.series)]
    body = _frame(chart, top, 6, _hour_label)
    for i, start in enumerate(chart.hours):
        base = float(TOP + PLOT_HEIGHT)
        for series, label, css in zip(chart.series, labels, classes, strict=True):
            count = series.values[i]
            if not count:
                continue
            height = count * scale
            base -= height
            body.append(
                f'<rect class="{css}" x="{_num(LEFT + i * width + 0.5)}" y="{_num(base)}" '
                f'width="{_num(max(width - 1, 0.5))}" height="{_num(height)}">'
                f"<title>{escape(label)}: {count:,} ({escape(_when(start))})</title></rect>"
            )
    total = sum(totals)
    hours = len(chart.hours)
    if total:
        busiest = max(range(hours), key=lambda i: (totals[i], i))
        description = (
            f"{total:,} activities in the last {hours} hours; the busiest hour was "
            f"{_when(chart.hours[busiest])} with {totals[busiest]:,}."
        )
    else:
        description = f"No activities in the last {hours} hours."
        body.append(_empty_note(description))
    title = f"Activities per hour by activityType, last {hours} hours"
    legend = tuple(
        LegendItem(label, css, sum(series.values))
        for series, label, css in zip(chart.series, labels, classes, strict=True)
    )
    caption = f"last {hours} hours (UTC); totals"
    return ChartView(_svg("chart-rate", title, description, body), legend, caption)


def severity_css(severity: str | None) -> str:
    """The class that paints a severity (the dashboard's sev- colours)."""
    known = {"CRITICAL", "MAJOR", "MODERATE", "MINOR", "NONE"}
    return f"fill-{severity.lower()}" if severity in known else "fill-none"


def open_view(chart: HourlyChart) -> ChartView:
    """Open alerts as stacked step areas, the worst severity at the bottom."""
    totals = chart.totals() if chart.series else tuple(0 for _ in chart.hours)
    top = max(totals, default=0)
    scale = _scale(top)
    width = PLOT_WIDTH / len(chart.hours)
    body = _frame(chart, top, 24, _hour_label)
    below = [0] * len(chart.hours)
    for series in chart.series:
        label = label_text(series.key, none="no severity")
        above = [low + value for low, value in zip(below, series.values, strict=True)]
        if any(series.values):
            upper = []
            for i, value in enumerate(above):
                y = _num(TOP + PLOT_HEIGHT - value * scale)
                upper.append(f"{_num(LEFT + i * width)},{y} {_num(LEFT + (i + 1) * width)},{y}")
            lower = []
            for i in reversed(range(len(below))):
                y = _num(TOP + PLOT_HEIGHT - below[i] * scale)
                lower.append(f"{_num(LEFT + (i + 1) * width)},{y} {_num(LEFT + i * width)},{y}")
            body.append(
                f'<polygon class="{severity_css(series.key)}" points="{" ".join(upper + lower)}">'
                f"<title>{escape(label)}: {series.values[-1]:,} open now, at most "
                f"{max(series.values):,}</title></polygon>"
            )
        below = above
    days = len(chart.hours) // 24
    now_open = totals[-1] if totals else 0
    if any(totals):
        description = (
            f"{now_open:,} alerts open now; at most {top:,} at once in the last {days} days. "
            + ", ".join(
                f"{label_text(s.key, none='no severity')}: {s.values[-1]:,}" for s in chart.series
            )
            + "."
        )
    else:
        description = f"No alert was open in the last {days} days."
        body.append(_empty_note(description))
    title = f"Open alerts by severity, last {days} days"
    legend = tuple(
        LegendItem(label_text(s.key, none="no severity"), severity_css(s.key), s.values[-1])
        for s in chart.series
    )
    caption = f"last {days} days, at the end of each hour (UTC); open now"
    return ChartView(_svg("chart-open", title, description, body), legend, caption)


@dataclass(frozen=True)
class Charts:
    """Both charts' series, and when they were computed (``time.monotonic``)."""

    rate: HourlyChart
    open: HourlyChart
    computed_at: float


_cache: weakref.WeakKeyDictionary[Database, Charts] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def chart_series(state: AppState, *, now: float | None = None) -> Charts:
    """Both charts' series, computed at most once per :data:`CACHE_SECONDS` per
    database; with ``now``, computed for that moment and not cached."""
    if now is not None:
        return Charts(activity_rate(state, now=now), open_alerts(state, now=now), 0.0)
    with _cache_lock:
        cached = _cache.get(state.db)
    if cached is not None and time.monotonic() - cached.computed_at < CACHE_SECONDS:
        return cached
    wall = time.time()
    fresh = Charts(activity_rate(state, now=wall), open_alerts(state, now=wall), time.monotonic())
    with _cache_lock:
        _cache[state.db] = fresh
    return fresh


def chart_views(state: AppState, *, now: float | None = None) -> tuple[ChartView, ChartView]:
    """The dashboard's two charts, drawn."""
    series = chart_series(state, now=now)
    return rate_view(series.rate), open_view(series.open)
