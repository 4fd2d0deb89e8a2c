"""Retention: batches, open alerts' history kept, rejected deliveries kept 30 days, daily task."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from app import retention
from app.background import Scheduler
from app.cli import main as cli
from app.ingest import ingest_activity, keep_rejected
from app.state import Rejection
from app.storage.tables import activities, alert_activities, alerts, rejected_deliveries
from tests.support import body, condition_activity, minimal_activity

DAY = 86400.0


def ingest(state: Any, payload: dict[str, Any]) -> None:
    ingest_activity(state, body(payload), payload)


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
        ingest(state, minimal_activity(n, activityTime=old + n))
    ingest(state, minimal_activity(20, activityTime=recent))
    # An alert still open, triggered long ago: its history stays.
    ingest(state, condition_activity(30, series_uid="open", activity_time=old))
    ingest(
        state,
        condition_activity(31, series_uid="open", status="ACKNOWLEDGED", activity_time=old + 5),
    )
    # A closed alert whose whole history is old: it goes, with its links.
    ingest(state, condition_activity(40, series_uid="gone", activity_time=old))
    ingest(state, condition_activity(41, series_uid="gone", status="RESET", activity_time=old + 9))
    # No activityTime: the arrival time decides.
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
    assert retention.install(state) == []
    assert stored_ids(state) == {1}


def test_prune_command(state: Any, database_url: str) -> None:
    ingest(state, minimal_activity(1, activityTime=time.time() - 40 * DAY))
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
    ingest(state, minimal_activity(1, activityTime=time.time() - 31 * DAY))
    first, second = Scheduler(state, tasks), Scheduler(state, tasks)
    assert first.run_due() == ["retention.prune"]
    assert stored_ids(state) == set()
    # Ran a moment ago (in any process): not due again for a day.
    ingest(state, minimal_activity(2, activityTime=time.time() - 31 * DAY))
    assert second.run_due() == []
    assert stored_ids(state) == {2}
