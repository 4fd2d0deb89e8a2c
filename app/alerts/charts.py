"""Open alerts by severity over the last days, hour by hour, for the dashboard's chart.

An alert's state at a point in time is the fold's (app.alerts.service) over its
activities ordered up to that point: the latest TRIGGERED or RESET decides whether it is
open, and an open alert counts under its latest TRIGGERED's severity (the alert's
current one when that TRIGGERED had none). So the chart's last point says what the
open-alerts list says.

Alerts whose activities all lie before the window are open or closed throughout it and
are counted per severity in SQL; only the alerts with activities in the window are
replayed, from their state at its start (app.storage.charts.state_changes_since).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence

from app.activities.charts import HOUR, HourlyChart, Series, hours_ending_at
from app.state import AppState
from app.storage import charts as store
from app.storage.alerts import SEVERITY_RANK

OPEN_HOURS = 7 * 24
# An alert's status in the replay: () closed, (severity,) open (a sender's severity may
# be any text, "closed" included, so the two never compare equal).
_CLOSED: tuple[str | None, ...] = ()


def _position(change: store.StateChange) -> tuple[float, int]:
    # NaN (stored before ingest refused it) sorts last, as PostgreSQL orders it; SQLite
    # keeps NaN as NULL, which no window query returns.
    order_time = change[2]
    return (math.inf if math.isnan(order_time) else order_time, change[3])


def _point(order_time: float, start: float, count: int) -> int:
    """The first point (the end of hour ``i``, the last point being now) at or after
    ``order_time``; a time after now counts at the last point, so an alert opened by a
    device whose clock runs ahead is open now, as the list says."""
    if not order_time < start + (count - 1) * HOUR:  # NaN included
        return count - 1
    return max(0, math.ceil((order_time - start) / HOUR) - 1)


def replay(
    changes: Sequence[store.StateChange], start: float, count: int
) -> tuple[dict[str | None, int], dict[str | None, list[int]]]:
    """From :func:`store.state_changes_since`'s rows: the alerts open at ``start`` per
    severity, and per severity the change in open alerts at each of ``count`` points."""
    by_alert: dict[str, list[store.StateChange]] = defaultdict(list)
    for change in changes:
        by_alert[change[0]].append(change)
    at_start: dict[str | None, int] = defaultdict(int)
    delta: dict[str | None, list[int]] = defaultdict(lambda: [0] * count)
    for links in by_alert.values():
        links.sort(key=_position)
        # The links before the window sort first and leave the state at its start (NaN
        # is not before it: PostgreSQL orders NaN after every time).
        first = 0
        status = _CLOSED
        while first < len(links) and links[first][2] < start:
            status = (links[first][4],) if links[first][1] == "T" else _CLOSED
            first += 1
        if status != _CLOSED:
            at_start[status[0]] += 1
        for _key, kind, order_time, _id, severity in links[first:]:
            new = (severity,) if kind == "T" else _CLOSED
            if new == status:
                continue
            at_point = _point(order_time, start, count)
            if status != _CLOSED:
                delta[status[0]][at_point] -= 1
            if new != _CLOSED:
                delta[new[0]][at_point] += 1
            status = new
    return at_start, delta


def _severity_order(severity: str | None) -> tuple[int, str]:
    """NinjaOne's severities worst first, then any other value, then none given."""
    if severity in SEVERITY_RANK:
        return (SEVERITY_RANK[severity], "")
    return (len(SEVERITY_RANK) + (severity is None), severity or "")


def open_alerts(
    state: AppState, *, now: float | None = None, hours: int = OPEN_HOURS
) -> HourlyChart:
    """Open alerts per severity at the end of each of the last ``hours`` hours (the last
    point is ``now``). NinjaOne's five severities always have a series, worst first (so
    their colours and legend stay put); another value, or none given, has one when it
    was open at some point."""
    now = time.time() if now is None else now
    starts = hours_ending_at(now, hours)
    with state.db.connect() as conn:
        before = store.open_before(conn, starts[0])
        changes = store.state_changes_since(conn, starts[0])
    at_start, delta = replay(changes, starts[0], hours)
    severities = set(SEVERITY_RANK) | set(before) | set(at_start) | set(delta)
    series = []
    for severity in sorted(severities, key=_severity_order):
        running = before.get(severity, 0) + at_start.get(severity, 0)
        values = []
        for change in delta.get(severity, [0] * hours):
            running += change
            values.append(running)
        if severity in SEVERITY_RANK or any(values):
            series.append(Series(severity, tuple(values)))
    return HourlyChart(hours=starts, series=tuple(series), now=now)
