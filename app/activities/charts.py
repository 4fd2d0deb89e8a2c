"""Activities per hour by activityType, for the dashboard's chart; and the shapes both
dashboard charts share (:class:`HourlyChart`)."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass

from app.state import AppState
from app.storage import charts as store

HOUR = store.HOUR
RATE_HOURS = 48
# The busiest activityTypes get a series each; the rest are added up as "other" (a
# legend of more does not fit a phone).
TOP_TYPES = 6


@dataclass(frozen=True)
class Series:
    """One line of a chart: ``values[i]`` belongs to the chart's hour ``i``.

    ``key`` is the stored value the series counts (an activityType, a severity; None for
    none given); ``other`` marks the series that adds up everything not shown alone.
    """

    key: str | None
    values: tuple[int, ...]
    other: bool = False


@dataclass(frozen=True)
class HourlyChart:
    """Series over whole hours (UTC): ``hours[i]`` is the start of hour ``i``, oldest
    first; the last is the hour ``now`` is in."""

    hours: tuple[float, ...]
    series: tuple[Series, ...]
    now: float

    def totals(self) -> tuple[int, ...]:
        """Every series added up, per hour."""
        return tuple(sum(column) for column in zip(*(s.values for s in self.series), strict=True))


def hours_ending_at(now: float, count: int) -> tuple[float, ...]:
    """The starts of the ``count`` whole UTC hours up to the one ``now`` is in."""
    current = math.floor(now / HOUR) * HOUR
    return tuple(current - (count - 1 - i) * HOUR for i in range(count))


def top_series(counts: dict[str | None, list[int]], top: int) -> tuple[Series, ...]:
    """The ``top`` largest series (by total; ties by key) and, when more are left, one
    ``other`` series adding the rest up."""
    ranked = sorted(counts.items(), key=lambda item: (-sum(item[1]), str(item[0])))
    if len(ranked) <= top + 1:  # one "other" standing for a single series says less
        return tuple(Series(key, tuple(values)) for key, values in ranked)
    shown = [Series(key, tuple(values)) for key, values in ranked[:top]]
    rest = zip(*(values for _, values in ranked[top:]), strict=True)
    return (*shown, Series(None, tuple(sum(column) for column in rest), other=True))


def activity_rate(
    state: AppState, *, now: float | None = None, hours: int = RATE_HOURS, top: int = TOP_TYPES
) -> HourlyChart:
    """Activities per hour by activityType over the last ``hours`` hours (the current one
    included), by activityTime: when NinjaOne says it happened, so a backfill or a
    redelivery lands in its own hour, not in the hour it arrived."""
    now = time.time() if now is None else now
    starts = hours_ending_at(now, hours)
    with state.db.connect() as conn:
        rows = store.activity_counts_per_hour(conn, starts[0], hours)
    counts: dict[str | None, list[int]] = defaultdict(lambda: [0] * hours)
    for hour, activity_type, count in rows:
        # Float division can round a time just before the window's end up to its end.
        counts[activity_type][min(max(hour, 0), hours - 1)] += count
    return HourlyChart(hours=starts, series=top_series(counts, top), now=now)
