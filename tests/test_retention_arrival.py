"""Retention counts from arrival (received_at), never from activityTime: an old-dated
activity (backfill, replayed delivery, a device with a wrong clock) stays for the whole
retention period, so its redelivery is still a duplicate and is not routed again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from app.retention import service as retention
from app.storage.tables import activities, deliveries
from tests.support import deliver, minimal_activity, one_route_file

DAY = 86400.0


def stored_ids(state: Any) -> set[int]:
    with state.db.connect() as conn:
        return set(conn.execute(sa.select(activities.c.id)).scalars())


def set_received_at(state: Any, activity_id: int, received_at: float) -> None:
    with state.db.begin() as conn:
        conn.execute(
            sa.update(activities)
            .where(activities.c.id == activity_id)
            .values(received_at=received_at)
        )


def test_an_activity_dated_400_days_ago_but_received_now_survives(state: Any, client: Any) -> None:
    now = time.time()
    deliver(client, minimal_activity(1, activityTime=now - 400 * DAY))
    result = retention.prune_database(state.db, retention_days=90)
    assert result.activities == 0
    assert stored_ids(state) == {1}


def test_an_activity_received_100_days_ago_is_pruned_whatever_its_activity_time(
    state: Any, client: Any
) -> None:
    now = time.time()
    # Dated now (a device clock in the future, or simply recent), received 100 days ago.
    deliver(client, minimal_activity(1, activityTime=now))
    set_received_at(state, 1, now - 100 * DAY)
    # Dated long ago and received 89 days ago: inside the period.
    deliver(client, minimal_activity(2, activityTime=now - 400 * DAY))
    set_received_at(state, 2, now - 89 * DAY)
    result = retention.prune_database(state.db, retention_days=90)
    assert result.activities == 1
    assert stored_ids(state) == {2}


def test_batches_walk_the_whole_table_by_id(state: Any, client: Any) -> None:
    """Old and recent arrivals interleaved: each batch reads a bounded id window, and
    every old one goes however the windows fall."""
    now = time.time()
    for n in range(1, 61):
        deliver(client, minimal_activity(n, activityTime=now - 500 * DAY))
        if n % 3 == 0:
            set_received_at(state, n, now - 120 * DAY)
    batches: list[int] = []
    result = retention.prune_database(
        state.db, retention_days=90, batch_size=2, progress=lambda r: batches.append(r.activities)
    )
    assert result.activities == 20
    assert batches == list(range(2, 21, 2))
    assert stored_ids(state) == {n for n in range(1, 61) if n % 3}


def test_a_redelivery_of_an_old_dated_activity_after_a_prune_is_a_duplicate(
    make_app: Any, tmp_path: Path
) -> None:
    routes = one_route_file(tmp_path, "http://127.0.0.1:9/hook")
    app = make_app(routes_file=str(routes), delivery_worker="off")
    state = app.app.extensions["ninjahook"]
    payload = minimal_activity(7, activityTime=time.time() - 400 * DAY)
    with app.test_client() as client:
        assert deliver(client, payload)["duplicate"] is False
        with state.db.begin() as conn:
            # Its notification was sent: the outbox no longer holds the activity.
            conn.execute(sa.update(deliveries).values(status="delivered"))
        retention.prune_database(state.db, retention_days=90)
        assert stored_ids(state) == {7}
        assert deliver(client, payload) == {"id": 7, "duplicate": True}
    with state.db.connect() as conn:
        routed = conn.execute(sa.select(deliveries.c.status)).scalars().all()
    assert routed == ["delivered"]  # routed once, not again as new
