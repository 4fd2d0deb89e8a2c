"""Late and recovered activities (README, "Routing"): ``max_lateness`` caps how late an
activity may arrive and still be notified, and an alert that is already over when its
activities arrive (a backfill, a redelivery) notifies nothing unless the route asks for
one summary (``notify_resolved_late: true``). Real webhook destination, real ingest path,
SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import load_config
from app.ingest.service import ingest_activity
from app.notifications.routes import RoutesError, parse_routes
from app.services import build_state
from app.storage import notifications as store
from tests.support import (
    FAST_DELIVERY,
    DestinationServer,
    body,
    condition_activity,
    minimal_activity,
    settle_deliveries,
)


@pytest.fixture
def destination() -> Iterator[DestinationServer]:
    server = DestinationServer().start()
    yield server
    server.stop()


@pytest.fixture
def make_state(settings: dict[str, Any], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    built: list[Any] = []

    def make(url: str, **options: str) -> Any:
        extra = "".join(f"    {key}: {value}\n" for key, value in options.items())
        path = tmp_path / f"routes-{len(built)}.yaml"
        path.write_text(
            f"destinations:\n  d: {{kind: webhook, url: '{url}'}}\n"
            "routes:\n  - name: pager\n    destinations: [d]\n" + extra
        )
        values = {k: v for k, v in settings.items() if k != "validate_responses"}
        config = load_config({**values, **FAST_DELIVERY, "routes_file": str(path)}, environ={})
        state = build_state(config, refresh_cache=False)
        built.append(state)
        return state

    yield make
    for state in built:
        state.db.dispose()


def backfill(state: Any, payload: dict[str, Any]) -> None:
    ingest_activity(state, body(payload), payload, source="backfill")


def alert_over_before_arrival(state: Any, n: int, now: float) -> None:
    """A backfill brings an alert that triggered 15 minutes ago and reset 14 minutes ago."""
    series = f"5b1e0d1c-0000-4000-8000-{n:012d}"
    backfill(
        state, condition_activity(n, status="TRIGGERED", series_uid=series, activity_time=now - 900)
    )
    backfill(
        state, condition_activity(n + 1, status="RESET", series_uid=series, activity_time=now - 840)
    )


def statuses(state: Any) -> list[tuple[int, str, str, str]]:
    with state.db.connect() as conn:
        rows = store.list_notifications(conn, store.NotificationFilter(), limit=1000)
    return sorted((r.activity_id, r.event, r.status, r.last_error or "") for r in rows)


def test_a_backfilled_alert_that_is_already_over_notifies_nothing(
    make_state: Callable[..., Any], destination: DestinationServer
) -> None:
    state = make_state(destination.url)
    now = time.time()
    for n in range(10, 100, 10):
        alert_over_before_arrival(state, n, now)
    # And one alert still open after the same backfill: it is news, and goes out.
    backfill(
        state,
        condition_activity(500, series_uid="still-open", activity_time=now - 900),
    )
    settle_deliveries(state)
    assert [(p["event"], p["activity"]["id"]) for p in destination.payloads()] == [("notify", 500)]
    found = statuses(state)
    over = [row for row in found if row[0] != 500]
    assert len(over) == 18
    assert all(row[2] == "skipped" for row in over)
    assert all(
        row[3].startswith("resolved first: the alert was resolved before it arrived")
        for row in over
        if row[1] == "notify"
    )


def test_notify_resolved_late_sends_one_summary_per_alert(
    make_state: Callable[..., Any], destination: DestinationServer
) -> None:
    state = make_state(destination.url, notify_resolved_late="true")
    now = time.time()
    alert_over_before_arrival(state, 10, now)
    alert_over_before_arrival(state, 20, now)
    settle_deliveries(state)
    payloads = destination.payloads()
    assert sorted((p["event"], p["summary"], p["activity"]["id"]) for p in payloads) == [
        ("resolved", True, 11),
        ("resolved", True, 21),
    ]
    assert all(p["alert"]["triggeredAt"] and p["alert"]["resolvedAt"] for p in payloads)
    assert all(p["title"].startswith("[RESOLVED] Disk Free Space") for p in payloads)


def test_max_lateness_keeps_late_activities_quiet_and_their_resolved_too(
    make_state: Callable[..., Any], destination: DestinationServer
) -> None:
    state = make_state(destination.url, max_lateness="10m")
    now = time.time()
    # 15 minutes late: not sent, and its RESET (on time) resolves nothing it sent.
    backfill(state, condition_activity(1, series_uid="late", activity_time=now - 900))
    # 5 minutes late: within the limit.
    backfill(state, condition_activity(2, series_uid="recent", activity_time=now - 300))
    # An activity without an alert is capped too.
    backfill(state, minimal_activity(3, activityTime=now - 3600))
    settle_deliveries(state)
    ingest_activity(
        state,
        body(condition_activity(4, status="RESET", series_uid="late", activity_time=now)),
        condition_activity(4, status="RESET", series_uid="late", activity_time=now),
    )
    settle_deliveries(state)
    assert [p["activity"]["id"] for p in destination.payloads()] == [2]
    found = {(row[0], row[1]): row for row in statuses(state)}
    assert found[(1, "notify")][2] == "skipped"
    assert found[(1, "notify")][3].startswith("late: the activity arrived 9")
    assert "max_lateness 600s" in found[(1, "notify")][3]
    assert found[(3, "notify")][2] == "skipped"
    assert found[(4, "resolved")][2] == "skipped"


def test_max_lateness_takes_durations_and_none() -> None:
    def lateness(value: str) -> float | None:
        text = (
            "destinations:\n  d: {kind: webhook, url: 'http://127.0.0.1:9/'}\n"
            f"routes:\n  - name: r\n    destinations: [d]\n    max_lateness: {value}\n"
        )
        return parse_routes(text).routes[0].max_lateness

    assert lateness("90") == 90.0
    assert lateness("15m") == 900.0
    assert lateness("2h") == 7200.0
    assert lateness("none") is None
    with pytest.raises(RoutesError, match=r"<routes>:6: routes\[0\] \(r\)\.max_lateness: expected"):
        lateness("soon")
    with pytest.raises(RoutesError, match="expected a duration"):
        lateness("-5m")
    default = parse_routes(
        "destinations:\n  d: {kind: webhook, url: 'http://127.0.0.1:9/'}\n"
        "routes:\n  - name: r\n    destinations: [d]\n"
    ).routes[0]
    assert default.max_lateness is None and default.notify_resolved_late is False
