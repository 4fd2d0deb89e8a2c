"""Retention: batches, open alerts' history kept, rejected deliveries and dead letters kept
30 days, the outbox of pruned activities, daily task."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from app.background import Scheduler
from app.cli.main import main as cli
from app.ingest.rejected import Rejection, keep_rejected
from app.ingest.service import ingest_activity
from app.retention import service as retention
from app.services import periodic_tasks
from app.storage import notifications as outbox
from app.storage.tables import (
    activities,
    alert_activities,
    alerts,
    deliveries,
    rejected_deliveries,
    route_notices,
)
from tests.support import body, condition_activity, minimal_activity

DAY = 86400.0


def ingest(state: Any, payload: dict[str, Any], *, received_at: float | None = None) -> None:
    """Ingest ``payload``; with ``received_at``, as if it had arrived then (retention
    counts from arrival, not from activityTime)."""
    ingest_activity(state, body(payload), payload)
    if received_at is not None:
        with state.db.begin() as conn:
            conn.execute(
                sa.update(activities)
                .where(activities.c.id == payload["id"])
                .values(received_at=received_at)
            )


def stored_ids(state: Any) -> set[int]:
    with state.db.connect() as conn:
        return set(conn.execute(sa.select(activities.c.id)).scalars())


def reject(state: Any, received_at: float) -> None:
    rejection = Rejection("id: is required", "id", b"{}", 2, False, "application/json")
    row_id = keep_rejected(state, rejection)
    with state.db.begin() as conn:
        conn.execute(
            sa.update(rejected_deliveries)
            .where(rejected_deliveries.c.id == row_id)
            .values(received_at=received_at)
        )


def test_prune_keeps_recent_activities_and_open_alerts_history(state: Any) -> None:
    now = time.time()
    old, recent = now - 100 * DAY, now - 10 * DAY
    for n in range(1, 8):
        ingest(state, minimal_activity(n, activityTime=old + n), received_at=old + n)
    ingest(state, minimal_activity(20, activityTime=recent), received_at=recent)
    # An alert still open, triggered long ago: its history stays.
    ingest(state, condition_activity(30, series_uid="open", activity_time=old), received_at=old)
    ingest(
        state,
        condition_activity(31, series_uid="open", status="ACKNOWLEDGED", activity_time=old + 5),
        received_at=old + 5,
    )
    # A closed alert whose whole history is old: it goes, with its links.
    ingest(state, condition_activity(40, series_uid="gone", activity_time=old), received_at=old)
    ingest(
        state,
        condition_activity(41, series_uid="gone", status="RESET", activity_time=old + 9),
        received_at=old + 9,
    )
    # No activityTime: the arrival time decides, as for every activity.
    ingest(state, minimal_activity(50, activityTime=None))

    batches: list[int] = []
    result = retention.prune_database(
        state.db,
        retention_days=90,
        batch_size=3,
        progress=lambda r: batches.append(r.activities),
    )
    assert result.activities == 9
    assert batches == [3, 6, 9]
    assert stored_ids(state) == {20, 30, 31, 50}
    with state.db.connect() as conn:
        assert set(conn.execute(sa.select(alerts.c.key)).scalars()) == {"open"}
        links = set(conn.execute(sa.select(alert_activities.c.activity_id)).scalars())
    assert links == {30, 31}

    later = retention.prune_database(state.db, retention_days=90, now=time.time() + 200 * DAY)
    assert later.activities == 2  # 20 and 50; the open alert's history still stays
    assert stored_ids(state) == {30, 31}


def test_rejected_deliveries_are_kept_at_least_30_days(state: Any) -> None:
    now = time.time()
    for age_days in (5, 20, 40, 100):
        reject(state, now - age_days * DAY)
    result = retention.prune_database(state.db, retention_days=7)
    assert result.rejected == 2
    with state.db.connect() as conn:
        ages = sorted(
            round((now - t) / DAY)
            for t in conn.execute(sa.select(rejected_deliveries.c.received_at)).scalars()
        )
    assert ages == [5, 20]


def test_zero_days_keeps_everything(make_app: Any) -> None:
    app = make_app(retention_days="0")
    state = app.app.extensions["ninjahook"]
    ingest(state, minimal_activity(1, activityTime=1.0))
    assert retention.prune_database(state.db, retention_days=0).activities == 0
    assert "retention.prune" not in [task.name for task in periodic_tasks(state)]
    assert stored_ids(state) == {1}


def test_prune_command(state: Any, database_url: str) -> None:
    ingest(state, minimal_activity(1), received_at=time.time() - 40 * DAY)
    ingest(state, minimal_activity(2, activityTime=time.time()))
    runner = CliRunner()
    kept = runner.invoke(cli, ["--database-url", database_url, "prune"])
    assert kept.exit_code == 0, kept.output
    assert "pruned 0 activities older than 90 days" in kept.output
    pruned = runner.invoke(cli, ["--database-url", database_url, "prune", "--days", "30"])
    assert pruned.exit_code == 0, pruned.output
    assert "pruned 1 activities older than 30 days" in pruned.output
    assert stored_ids(state) == {2}
    bad = runner.invoke(cli, ["--database-url", database_url, "prune", "--days", "0"])
    assert bad.exit_code == 2
    assert "--days" in bad.output


def test_the_server_prunes_daily_in_one_process(make_app: Any) -> None:
    app = make_app(retention_days="30")
    state = app.app.extensions["ninjahook"]
    tasks = [
        t for t in app.app.extensions["ninjahook.scheduler"].tasks if t.name == "retention.prune"
    ]
    assert [t.interval for t in tasks] == [DAY]
    ingest(state, minimal_activity(1), received_at=time.time() - 31 * DAY)
    first, second = Scheduler(state, tasks), Scheduler(state, tasks)
    assert first.run_due() == ["retention.prune"]
    assert stored_ids(state) == set()
    # Ran a moment ago (in any process): not due again for a day.
    ingest(state, minimal_activity(2), received_at=time.time() - 31 * DAY)
    assert second.run_due() == []
    assert stored_ids(state) == {2}


def outbox_row(
    state: Any, activity_id: int, status: str, *, changed: float, route: str = "r"
) -> str:
    """A delivery of ``activity_id`` in ``status``, last changed at ``changed`` (for a dead
    letter: when it died); returns its uid."""
    with state.db.begin() as conn:
        uid = outbox.enqueue(
            conn,
            activity_id=activity_id,
            route=route,
            destination="d",
            kind="webhook",
            event="notify",
            alert_key=None,
            refers_to=None,
            now=changed,
        )
        assert uid is not None
        conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.uid == uid)
            .values(status=status, updated_at=changed, attempts=3)
        )
    return uid


def outbox_uids(state: Any) -> set[str]:
    with state.db.connect() as conn:
        return set(conn.execute(sa.select(deliveries.c.uid)).scalars())


def test_prune_takes_finished_deliveries_with_their_activities_and_keeps_the_rest(
    state: Any,
) -> None:
    now = time.time()
    old, recent = now - 100 * DAY, now - DAY
    for n in range(1, 6):
        ingest(state, minimal_activity(n, activityTime=old + n), received_at=old + n)
    ingest(state, minimal_activity(6, activityTime=recent), received_at=recent)
    delivered_old = outbox_row(state, 1, "delivered", changed=old)
    dead_long_ago = outbox_row(state, 2, "dead", changed=now - 40 * DAY)
    dead_lately = outbox_row(state, 3, "dead", changed=now - 10 * DAY)
    pending = outbox_row(state, 4, "pending", changed=old)
    in_flight = outbox_row(state, 5, "delivering", changed=old)
    delivered_recent = outbox_row(state, 6, "delivered", changed=recent)
    # Left behind by a prune before the outbox was pruned: their activity 99 is gone.
    orphan_delivered = outbox_row(state, 99, "delivered", changed=old, route="o1")
    orphan_dead_long_ago = outbox_row(state, 99, "dead", changed=now - 40 * DAY, route="o2")
    orphan_dead_lately = outbox_row(state, 99, "dead", changed=now - 10 * DAY, route="o3")
    orphan_pending = outbox_row(state, 99, "pending", changed=old, route="o4")

    # 7 days for activities; dead letters, like rejected deliveries, stay 30 days, and
    # keep their activity so that a retry can still render the message.
    batches: list[tuple[int, int]] = []
    result = retention.prune_database(
        state.db,
        retention_days=7,
        batch_size=2,
        now=now,
        progress=lambda r: batches.append((r.activities, r.deliveries)),
    )
    assert stored_ids(state) == {3, 4, 5, 6}
    assert (result.activities, result.deliveries) == (2, 4)
    assert batches[0] == (2, 2) and batches[-1] == (2, 4)
    assert outbox_uids(state) == {
        dead_lately,
        pending,
        in_flight,
        delivered_recent,
        orphan_dead_lately,
        orphan_pending,
    }
    assert not {delivered_old, dead_long_ago, orphan_delivered, orphan_dead_long_ago} & (
        outbox_uids(state)
    )

    # 40 days on, the dead letter has waited 30 days: it goes with its activity, and so
    # does the recent activity with its delivery. Pending ones stay, whatever their age.
    later = retention.prune_database(state.db, retention_days=7, now=now + 40 * DAY)
    assert (later.activities, later.deliveries) == (2, 3)
    assert stored_ids(state) == {4, 5}
    assert outbox_uids(state) == {pending, in_flight, orphan_pending}


def route_alert(
    state: Any, key: str, state_name: str, opened_by: int, resolved_by: int | None
) -> None:
    with state.db.begin() as conn:
        conn.execute(
            sa.insert(route_notices).values(
                route="r",
                alert_key=key,
                state=state_name,
                opened_activity_id=opened_by,
                resolved_activity_id=resolved_by,
                opened_at=time.time(),
                resolved_at=time.time() if resolved_by is not None else None,
                repeats=0,
            )
        )


def test_routes_alert_states_go_once_resolved_and_their_activities_are_gone(
    state: Any,
) -> None:
    now = time.time()
    old = now - 100 * DAY
    for n in (10, 11, 12, 13, 15):
        ingest(state, minimal_activity(n, activityTime=old + n), received_at=old + n)
    ingest(state, minimal_activity(14, activityTime=now - DAY), received_at=now - DAY)
    route_alert(state, "resolved-long-ago", "resolved", 10, 11)
    route_alert(state, "remembered-reset", "resolved", 15, 15)
    route_alert(state, "opened-long-ago", "open", 12, None)  # its RESET must still notify
    route_alert(state, "resolved-lately", "resolved", 13, 14)

    result = retention.prune_database(state.db, retention_days=7, batch_size=1, now=now)
    assert result.route_notices == 2
    with state.db.connect() as conn:
        kept = set(conn.execute(sa.select(route_notices.c.alert_key)).scalars())
    assert kept == {"opened-long-ago", "resolved-lately"}
    assert stored_ids(state) == {14}
