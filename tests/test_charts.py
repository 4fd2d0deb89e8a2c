"""The dashboard charts' series (activities per hour by type, open alerts by severity over
a week) on known data, on every backend, and their SVG: well-formed, escaped, labelled."""

from __future__ import annotations

import itertools
import math
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from app.activities.charts import (
    HOUR,
    HourlyChart,
    Series,
    activity_rate,
    hours_ending_at,
    top_series,
)
from app.alerts.charts import OPEN_HOURS, open_alerts
from app.storage.alerts import open_alerts_by_severity
from app.web.dashboard import charts as drawing
from tests.support import condition_activity, deliver, minimal_activity

# 2025-11-28 03:00:00 UTC plus 20 minutes: "now" is 20 minutes into an hour.
NOW = 1764298800.0 + 1200.0
SVG = "{http://www.w3.org/2000/svg}"


def activity(activity_id: int, when: float, activity_type: str = "SYSTEM") -> dict[str, Any]:
    return minimal_activity(activity_id, activityTime=when, activityType=activity_type)


def values(chart: Any) -> dict[str | None, tuple[int, ...]]:
    return {s.key: s.values for s in chart.series if not s.other}


def test_the_window_is_whole_utc_hours_up_to_the_current_one() -> None:
    hours = hours_ending_at(NOW, 48)
    assert len(hours) == 48
    assert hours[-1] == NOW - 1200.0
    assert hours[0] == hours[-1] - 47 * HOUR
    assert all(b - a == HOUR for a, b in itertools.pairwise(hours))


def test_activities_are_counted_per_hour_and_type_by_activity_time(client: Any, state: Any) -> None:
    first = NOW - 1200.0 - 47 * HOUR  # the start of the window's oldest hour
    deliveries = [
        activity(1, first, "ACTION"),  # the very start: hour 0
        activity(2, first + HOUR - 0.001, "ACTION"),  # still hour 0
        activity(3, first + HOUR, "ACTION"),  # hour 1
        activity(4, NOW - 60, "SYSTEM"),  # the current hour (47)
        activity(5, NOW - 1, "SYSTEM"),
        activity(6, NOW + 600, "SYSTEM"),  # later this hour: a clock slightly ahead, hour 47
        activity(7, first - 0.001, "SYSTEM"),  # just before the window
        activity(8, NOW + 3600, "SYSTEM"),  # the next hour: not in the window
        activity(9, 1e300, "SYSTEM"),  # no time at all (stored raw, issue #12)
        activity(10, -5.0, "SYSTEM"),
        activity(11, first + 10 * HOUR + 5, "CONDITION"),
    ]
    for payload in deliveries:
        deliver(client, payload)
    chart = activity_rate(state, now=NOW)
    assert chart.hours == hours_ending_at(NOW, 48)
    counted = values(chart)
    assert set(counted) == {"ACTION", "SYSTEM", "CONDITION"}
    assert counted["ACTION"][:2] == (2, 1) and sum(counted["ACTION"]) == 3
    assert counted["SYSTEM"][47] == 3 and sum(counted["SYSTEM"]) == 3
    assert counted["CONDITION"][10] == 1 and sum(counted["CONDITION"]) == 1
    # Series come busiest first; the totals add every series up, hour by hour.
    assert [s.key for s in chart.series] == ["ACTION", "SYSTEM", "CONDITION"]
    assert sum(chart.totals()) == 7
    assert chart.totals()[0] == 2


def test_no_activities_make_an_empty_chart(state: Any) -> None:
    chart = activity_rate(state, now=NOW)
    assert chart.series == ()
    assert len(chart.hours) == 48
    view = drawing.rate_view(chart)
    assert "No activities in the last 48 hours." in str(view.svg)
    assert view.legend == ()
    ET.fromstring(str(view.svg))


def test_the_busiest_types_are_shown_and_the_rest_add_up_as_other() -> None:
    counts: dict[str | None, list[int]] = {f"T{n}": [n, 1] for n in range(1, 10)}
    counts[None] = [20, 0]
    series = top_series(counts, 3)
    assert [s.key for s in series] == [None, "T9", "T8", None]
    assert [s.other for s in series] == [False, False, False, True]
    # T1..T7 are left: 1+..+7 in the first hour, 7 in the second.
    assert series[-1].values == (28, 7)
    # One series left over is shown as itself, not as "other".
    assert not any(s.other for s in top_series({"A": [3], "B": [2], "C": [1]}, 2))


def condition(
    activity_id: int, series: str, status: str, when: float, severity: str | None = "MAJOR"
) -> dict[str, Any]:
    return condition_activity(
        activity_id, status=status, series_uid=series, activity_time=when, severity=severity
    )


def test_open_alerts_per_severity_at_the_end_of_each_hour(client: Any, state: Any) -> None:
    start = NOW - 1200.0 - (OPEN_HOURS - 1) * HOUR  # the start of the week's oldest hour
    last = OPEN_HOURS - 1
    deliveries = [
        # Open since before the week: open throughout.
        condition(1, "old-open", "TRIGGERED", start - 10 * HOUR, "CRITICAL"),
        # Opened before, reset in hour 10 (a minute in): open at the end of hours 0..9.
        condition(2, "reset-in-week", "TRIGGERED", start - 5 * HOUR, "MAJOR"),
        condition(3, "reset-in-week", "RESET", start + 10 * HOUR + 60, None),
        # Opened and closed before the week: never open in it.
        condition(4, "old-closed", "TRIGGERED", start - 9 * HOUR, "CRITICAL"),
        condition(5, "old-closed", "RESET", start - 8 * HOUR, None),
        # Opened MINOR in hour 100, raised to MAJOR in hour 120, reset in hour 150.
        condition(6, "flapping", "TRIGGERED", start + 100 * HOUR + 1800, "MINOR"),
        condition(7, "flapping", "TRIGGERED", start + 120 * HOUR + 1800, "MAJOR"),
        condition(8, "flapping", "ACKNOWLEDGED", start + 121 * HOUR, None),
        condition(9, "flapping", "RESET", start + 150 * HOUR + 1, None),
        # Reopened in hour 160, delivered before the earlier events it follows.
        condition(12, "late", "TRIGGERED", start + 160 * HOUR + 1, "MODERATE"),
        condition(10, "late", "TRIGGERED", start - 100 * HOUR, "MODERATE"),
        condition(11, "late", "RESET", start + 20 * HOUR + 1, None),
        # Times that are no time (stored raw, issue #12): far in the future, negative.
        condition(13, "future", "TRIGGERED", 1e300, "MINOR"),
        condition(14, "negative", "TRIGGERED", -5.0, "MINOR"),
        # A TRIGGERED without a severity, opened in hour 30.
        condition(15, "no-severity", "TRIGGERED", start + 30 * HOUR + 10, None),
        # Reset before the week and again in it: closed throughout (closed_at is the last).
        condition(16, "reset-twice", "TRIGGERED", start - 6 * HOUR, "CRITICAL"),
        condition(17, "reset-twice", "RESET", start - 5 * HOUR, None),
        condition(18, "reset-twice", "RESET", start + 3 * HOUR, None),
        # Closed before the week, only acknowledged in it: closed throughout.
        condition(19, "ack-only", "TRIGGERED", start - 7 * HOUR, "CRITICAL"),
        condition(20, "ack-only", "RESET", start - 6 * HOUR, None),
        condition(21, "ack-only", "ACKNOWLEDGED", start + 5 * HOUR, None),
        # Open since before the week, raised from MINOR to CRITICAL in hour 50.
        condition(22, "raised", "TRIGGERED", start - 3 * HOUR, "MINOR"),
        condition(23, "raised", "TRIGGERED", start + 50 * HOUR + 1, "CRITICAL"),
    ]
    for payload in deliveries:
        deliver(client, payload)
    chart = open_alerts(state, now=NOW)
    assert len(chart.hours) == OPEN_HOURS
    assert [s.key for s in chart.series] == ["CRITICAL", "MAJOR", "MODERATE", "MINOR", "NONE", None]
    counted = values(chart)
    critical = counted["CRITICAL"]
    assert critical[:50] == (1,) * 50 and critical[50:] == (2,) * (OPEN_HOURS - 50)
    assert counted["NONE"] == (0,) * OPEN_HOURS
    major = counted["MAJOR"]
    assert major[:10] == (1,) * 10 and major[10] == 0
    assert major[119] == 0 and major[120] == 1 and major[149] == 1 and major[150] == 0
    minor = counted["MINOR"]
    # "negative" throughout; "raised" until hour 49; "flapping" from hour 100 to 119;
    # "future" at the last point.
    assert minor[:50] == (2,) * 50 and minor[50] == 1
    assert minor[99] == 1 and minor[100] == 2 and minor[119] == 2 and minor[120] == 1
    assert minor[last - 1] == 1 and minor[last] == 2
    moderate = counted["MODERATE"]
    assert moderate[:20] == (1,) * 20 and moderate[20:160] == (0,) * 140
    assert moderate[160:] == (1,) * (OPEN_HOURS - 160)
    assert counted[None][29] == 0 and counted[None][30] == 1 and counted[None][last] == 1
    # The last point is what the open-alerts list counts.
    with state.db.connect() as conn:
        listed = open_alerts_by_severity(conn)
    assert {s.key: s.values[-1] for s in chart.series if s.values[-1]} == listed


def test_with_no_alerts_every_severity_is_zero(state: Any) -> None:
    chart = open_alerts(state, now=NOW)
    assert [s.key for s in chart.series] == ["CRITICAL", "MAJOR", "MODERATE", "MINOR", "NONE"]
    assert all(s.values == (0,) * OPEN_HOURS for s in chart.series)
    view = drawing.open_view(chart)
    assert "No alert was open in the last 7 days." in str(view.svg)
    assert (view.legend[0].label, view.legend[0].value) == ("CRITICAL", 0)
    ET.fromstring(str(view.svg))


def test_an_alert_with_activities_only_far_outside_the_week_is_counted_right(
    client: Any, state: Any
) -> None:
    # Opened at a negative time and reset in the year 10^300: open until now.
    deliver(client, condition(1, "absurd", "TRIGGERED", -1e300, "CRITICAL"))
    deliver(client, condition(2, "absurd", "RESET", 1e300, None))
    chart = open_alerts(state, now=NOW)
    critical = values(chart)["CRITICAL"]
    assert critical[:-1] == (1,) * (OPEN_HOURS - 1)
    assert critical[-1] == 0


HOSTILE = '<script>alert("x")</script> & \x01\ud800 ]]> ' + "A" * 80


def test_the_svg_is_well_formed_and_escapes_what_senders_sent() -> None:
    hours = hours_ending_at(NOW, 48)
    counts = [0] * 48
    counts[5], counts[47] = 3, 12
    rate = HourlyChart(
        hours=hours,
        series=(Series(HOSTILE, tuple(counts)), Series(None, tuple(counts), other=True)),
        now=NOW,
    )
    view = drawing.rate_view(rate)
    text = str(view.svg)
    assert "<script" not in text
    root = ET.fromstring(text)
    assert root.tag == SVG + "svg"
    assert root.get("viewBox") == f"0 0 {drawing.WIDTH} {drawing.HEIGHT}"
    assert root.get("role") == "img"
    title = root.find(SVG + "title")
    assert title is not None and title.text is not None
    assert "Activities per hour" in title.text
    desc = root.find(SVG + "desc")
    assert desc is not None and desc.text is not None and "30 activities" in desc.text
    bars = root.findall(SVG + "rect")
    assert len(bars) == 4
    bar_titles = [bar.findtext(SVG + "title") or "" for bar in bars]
    assert any(t.startswith('<script>alert("x")</script> & \ufffd\ufffd ]]>') for t in bar_titles)
    assert all(len(t.split(":")[0]) <= drawing.LABEL_CHARS for t in bar_titles)
    # The taller hour's bars reach higher (a smaller y) than the other's.
    tops = sorted(float(bar.get("y") or 0) for bar in bars)
    assert tops[0] < tops[-1]
    assert [item.label for item in view.legend][1] == "other"
    assert view.legend[0].value == 15
    assert view.legend[0].label.endswith("…") and len(view.legend[0].label) == drawing.LABEL_CHARS


def test_open_alerts_are_painted_in_their_severity_colours() -> None:
    hours = hours_ending_at(NOW, OPEN_HOURS)
    chart = HourlyChart(
        hours=hours,
        series=(
            Series("CRITICAL", (2,) * OPEN_HOURS),
            Series("MINOR", (0,) * OPEN_HOURS),
            Series(HOSTILE, (1,) * OPEN_HOURS),
        ),
        now=NOW,
    )
    view = drawing.open_view(chart)
    root = ET.fromstring(str(view.svg))
    areas = root.findall(SVG + "polygon")
    # A series that is never open draws nothing; its legend entry stays, at 0.
    assert [a.get("class") for a in areas] == ["fill-critical", "fill-none"]
    assert [(i.css, i.value) for i in view.legend] == [
        ("fill-critical", 2),
        ("fill-minor", 0),
        ("fill-none", 1),
    ]
    desc = root.findtext(SVG + "desc") or ""
    assert desc.startswith("3 alerts open now; at most 3 at once in the last 7 days.")
    # Every point of the areas is inside the drawing.
    for area in areas:
        for point in (area.get("points") or "").split():
            x, y = (float(v) for v in point.split(","))
            assert 0 <= x <= drawing.WIDTH and 0 <= y <= drawing.HEIGHT


@pytest.mark.parametrize("largest", [0, 1, 3, 4, 7, 41, 999, 12_345])
def test_gridlines_reach_the_largest_value_in_round_steps(largest: int) -> None:
    step = drawing._nice_step(largest)
    assert step * drawing.Y_TICKS >= largest
    assert step / 10 ** math.floor(math.log10(step)) in (1, 2, 5)


def test_the_series_are_computed_once_a_minute(
    client: Any, state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(client, activity(1, time.time(), "SYSTEM"))
    first = drawing.chart_series(state)
    assert [s.key for s in first.rate.series] == ["SYSTEM"]
    deliver(client, activity(2, time.time(), "ACTION"))
    assert drawing.chart_series(state) is first  # within the minute: not computed again
    monkeypatch.setattr(drawing, "CACHE_SECONDS", 0.0)
    fresh = drawing.chart_series(state)
    assert sorted(str(s.key) for s in fresh.rate.series) == ["ACTION", "SYSTEM"]


def test_an_event_at_the_end_of_an_hour_counts_at_that_hours_point() -> None:
    from app.alerts.charts import _point

    start = 1000 * HOUR
    assert _point(start, start, 168) == 0
    assert _point(start + HOUR, start, 168) == 0  # the end of hour 0
    assert _point(start + HOUR + 0.001, start, 168) == 1
    assert _point(start + 167 * HOUR, start, 168) == 167  # the last point: now
    assert _point(start + 10_000 * HOUR, start, 168) == 167  # after now: counted now
    assert _point(math.nan, start, 168) == 167


def test_the_chart_benchmark_runs_and_writes_its_section(tmp_path: Any) -> None:
    from bench import charts as bench_charts

    result = bench_charts.run(f"sqlite:///{tmp_path / 'bench.sqlite3'}", 3000, repeat=2, quiet=True)
    assert result["alerts"] > 0 and result["links"] > result["alerts"]
    assert result["rate_activities"] > 0 and result["open_now"] > 0
    section = bench_charts.markdown([result])
    assert section.startswith("## Charts\n")
    assert "| activities per hour by activityType, last 48 h |" in section
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\n## Charts\n\nSTALE FIGURES\n\n## Later\n\nkept\n")
    bench_charts.write_markdown(section, target)
    text = target.read_text()
    assert "STALE FIGURES" not in text and text.count("## Charts") == 1 and text.endswith("kept\n")


def test_a_severity_named_like_a_state_is_still_a_severity() -> None:
    from app.alerts.charts import replay

    start = 1000 * HOUR
    at_start, delta = replay(
        [
            ("a", "R", start + 2 * HOUR + 1, 2, None),
            ("a", "T", start - 1, 1, "closed"),  # open at the start, severity "closed"
            ("b", "T", start + 1, 3, "closed"),
            ("b", "T", start + HOUR + 1, 4, "closed"),  # no change: still open
        ],
        start,
        4,
    )
    assert at_start == {"closed": 1}
    assert delta["closed"] == [1, 0, -1, 0]


@pytest.mark.parametrize(
    ("count", "shown"), [(0, "0"), (2500, "2,500"), (40_000, "40k"), (1_500_000, "1.5M")]
)
def test_gridline_figures_fit_the_margin(count: int, shown: str) -> None:
    assert drawing._compact(count) == shown
