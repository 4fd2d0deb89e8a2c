"""Alerts whose activities arrive out of activityTime order (issue item 17).

An out-of-order activity is resolved by index seeks over the alert's links: the stored
row must still be exactly :func:`app.alerts.service.fold` of the whole history (and what
``alerts rebuild`` writes), and its cost must not grow with the history.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.alerts import service as alerts
from app.ingest.pipeline import Stage
from app.ingest.service import ingest_activity, store_in_transaction
from app.storage import alerts as alert_store
from app.storage.alerts import all_alerts
from tests.support import body, condition_activity

T0 = 1764300000.0
SERIES = "5f0c1c4e-0000-4000-8000-0000000a0017"
STATUSES = ["TRIGGERED", "RESET", "ACKNOWLEDGED", "CONDITION_UPDATED"]


def _only_alerts(state: Any) -> None:
    state.pipeline.stages[:] = [Stage("alerts", alerts.apply_new_activity)]


def _payload(activity_id: int, spec: dict[str, Any]) -> dict[str, Any]:
    """One CONDITION activity of SERIES; None in ``spec`` leaves the field out."""
    payload = condition_activity(
        activity_id,
        status=spec["status"],
        series_uid=SERIES,
        device_id=spec["device"] or 1,
        organization_id=spec["organization"] or 1,
        location_id=spec["location"] or 1,
        activity_time=spec["time"],
        severity=spec["severity"],
        expand=spec["organization"] is not None and spec["location"] is not None,
    )
    if spec["time"] is None:
        del payload["activityTime"]
    if spec["device"] is None:
        del payload["deviceId"]
        payload.pop("device", None)
    for field in ("message", "sourceName", "priority"):
        if spec[field] is None:
            payload.pop(field, None)
        else:
            payload[field] = spec[field]
    return payload


def _events() -> st.SearchStrategy[list[dict[str, Any]]]:
    event = st.fixed_dictionaries(
        {
            "status": st.sampled_from(STATUSES),
            # Few distinct times, so that ties (decided by the id) are common.
            "time": st.one_of(st.none(), st.sampled_from([T0, T0 + 1, T0 + 2, T0 + 3])),
            "severity": st.sampled_from([None, "MINOR", "MAJOR", "CRITICAL"]),
            "priority": st.sampled_from([None, "LOW", "HIGH"]),
            "message": st.sampled_from([None, "disk low", "disk very low"]),
            "sourceName": st.sampled_from([None, "Disk", "CPU"]),
            "device": st.sampled_from([None, 41, 42]),
            "organization": st.sampled_from([None, 7, 8]),
            "location": st.sampled_from([None, 9, 10]),
        }
    )
    return st.lists(event, min_size=1, max_size=12)


def _rebuilt(state: Any) -> list[Any]:
    """Every alert row as ``alerts rebuild`` computes it, leaving the stored rows as they were."""
    with state.db.connect() as conn:
        trans = conn.begin()
        alerts.rebuild(conn)
        rows = all_alerts(conn)
        trans.rollback()
    return rows


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=_events(), data=st.data())
def test_any_arrival_order_stores_the_fold_of_the_whole_history(
    state: Any, events: list[dict[str, Any]], data: st.DataObject
) -> None:
    _only_alerts(state)
    with state.db.begin() as conn:
        for table in ("alert_activities", "alerts", "activities"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    payloads = [_payload(100 + n, spec) for n, spec in enumerate(events)]
    order = data.draw(st.permutations(payloads), label="arrival order")
    redelivered = data.draw(st.lists(st.sampled_from(payloads), max_size=2), label="redelivered")
    for payload in [*order, *redelivered]:
        ingest_activity(state, body(payload), payload)
    with state.db.connect() as conn:
        (stored,) = all_alerts(conn)
        expected = alerts.fold(alert_store.alert_events(conn, SERIES))
    assert {k: v for k, v in stored._mapping.items() if k != "key"} == expected
    assert [stored] == _rebuilt(state)


def _cost_counter(conn: Any) -> tuple[Callable[[], None], Callable[[], int]]:
    """(start, stop) for measuring the work ``conn`` does: SQLite VM instructions, or on
    PostgreSQL the rows this transaction read from activities and alert_activities."""
    if conn.dialect.name == "sqlite":
        raw = conn.connection.dbapi_connection
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        def start() -> None:
            raw.set_progress_handler(count, 1)

        def stop() -> int:
            raw.set_progress_handler(None, 1)
            return steps[0]

        return start, stop
    query = (
        "SELECT COALESCE(SUM(COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)), 0) "
        "FROM pg_stat_xact_user_tables WHERE relname IN ('activities', 'alert_activities')"
    )
    before = [0]

    def pg_start() -> None:
        before[0] = int(conn.exec_driver_sql(query).scalar())

    def pg_stop() -> int:
        return int(conn.exec_driver_sql(query).scalar()) - before[0]

    return pg_start, pg_stop


def _measured_ingest(state: Any, payload: dict[str, Any]) -> int:
    with state.db.begin() as conn:
        start, stop = _cost_counter(conn)
        start()
        store_in_transaction(state, conn, body(payload), payload, "webhook", time.time())
        return stop()


FLAPPING = ["TRIGGERED", "ACKNOWLEDGED", "RESET", "TRIGGERED", "RESET"]


def _flapping(n: int, seconds: float) -> dict[str, Any]:
    return condition_activity(
        1_000 + n,
        status=FLAPPING[n % len(FLAPPING)],
        series_uid=SERIES,
        activity_time=T0 + seconds,
        severity=["MINOR", "MAJOR", None][n % 3],
    )


def test_an_out_of_order_activity_costs_the_same_after_2000_as_after_10(state: Any) -> None:
    """Each activity arrives older than every one before it (a backfill, newest first):
    the 10th and the 2,000th cost exactly the same work (both are the same status)."""
    _only_alerts(state)
    costs = {}
    for n in range(2_000):
        payload = _flapping(n, -n)
        if n in (9, 1_999):
            costs[n] = _measured_ingest(state, payload)
        else:
            ingest_activity(state, body(payload), payload)
    assert costs[9] > 0
    assert costs[1_999] == costs[9]
    with state.db.connect() as conn:
        (stored,) = all_alerts(conn)
        expected = alerts.fold(alert_store.alert_events(conn, SERIES))
    assert {k: v for k, v in stored._mapping.items() if k != "key"} == expected
    assert [stored] == _rebuilt(state)


def test_random_arrival_order_cost_stays_bounded(state: Any) -> None:
    """A flapping condition's activities in random activityTime order: the late ones cost
    no more than the early ones did (a refold would read the whole history)."""
    _only_alerts(state)
    rng = random.Random(17)
    seconds = [rng.uniform(0, 10_000) for _ in range(1_500)]
    early: list[int] = []
    late: list[int] = []
    for n, at in enumerate(seconds):
        payload = _flapping(n, at)
        if 10 <= n < 60:
            early.append(_measured_ingest(state, payload))
        elif n >= 1_450:
            late.append(_measured_ingest(state, payload))
        else:
            ingest_activity(state, body(payload), payload)
    assert max(late) <= max(early) * 1.1
    with state.db.connect() as conn:
        (stored,) = all_alerts(conn)
    assert [stored] == _rebuilt(state)
