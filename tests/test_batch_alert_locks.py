"""A batch's alerts are locked by one statement (PostgreSQL), with the same result as
one lock per delivery: several activities of one alert in a batch, in any order, store
the fold of the whole history, and an alert is created only for an activity that was
new."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from app.alerts import service as alerts
from app.ingest.group_commit import GroupCommitter, _Waiting
from app.state import AppState
from app.storage import alerts as store
from app.storage.alerts import all_alerts, locked_alerts
from app.storage.prepared import pipelined
from tests.support import body, condition_activity

T0 = 1764300000.0


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture
def committer(state: AppState) -> Iterator[GroupCommitter]:
    """A committer acting as its own writer thread (this test's thread)."""
    committer = GroupCommitter(state)
    committer._thread = threading.current_thread()
    yield committer
    committer._release()


def store_batch(
    committer: GroupCommitter, loop: asyncio.AbstractEventLoop, payloads: list[dict[str, Any]]
) -> list[_Waiting]:
    batch = [
        _Waiting(body(payload), payload, "webhook", loop, loop.create_future())
        for payload in payloads
    ]
    committer._store(batch)
    for item in batch:
        assert item.error is None, item.error
    return batch


def rebuilt(state: AppState) -> list[Any]:
    """Every alert row as ``alerts rebuild`` computes it (the stored rows stay)."""
    with state.db.connect() as conn:
        trans = conn.begin()
        alerts.rebuild(conn)
        rows = all_alerts(conn)
        trans.rollback()
    return rows


def stored(state: AppState) -> list[Any]:
    with state.db.connect() as conn:
        return all_alerts(conn)


def series(n: int) -> str:
    return str(uuid.UUID(int=10_000 + n))


def test_batches_with_several_activities_of_each_alert_store_the_whole_fold(
    state: AppState, committer: GroupCommitter, loop: asyncio.AbstractEventLoop
) -> None:
    rng = random.Random(12)
    statuses = ["TRIGGERED", "RESET", "ACKNOWLEDGED", "TRIGGERED"]
    severities = [None, "MINOR", "MAJOR", "CRITICAL"]
    payloads = [
        condition_activity(
            1000 + i,
            status=rng.choice(statuses),
            series_uid=series(rng.randrange(4)),
            activity_time=T0 + rng.randrange(40),
            severity=rng.choice(severities),
        )
        for i in range(120)
    ]
    rng.shuffle(payloads)
    for start in range(0, len(payloads), 24):
        store_batch(committer, loop, payloads[start : start + 24])

    rows = stored(state)
    assert len(rows) == 4
    assert rows == rebuilt(state)


def test_a_redelivery_in_a_batch_creates_no_alert(
    state: AppState, committer: GroupCommitter, loop: asyncio.AbstractEventLoop
) -> None:
    # Stored without the alerts stage: its alert does not exist.
    stages = list(state.pipeline.stages)
    state.pipeline.stages[:] = [stage for stage in stages if stage.name != "alerts"]
    store_batch(committer, loop, [condition_activity(1, series_uid=series(1))])
    state.pipeline.stages[:] = stages
    assert stored(state) == []

    batch = store_batch(
        committer,
        loop,
        [
            condition_activity(2, series_uid=series(2)),
            condition_activity(1, series_uid=series(1)),  # redelivered
            condition_activity(3, series_uid=series(2)),
        ],
    )

    assert [(w.result.id, w.result.duplicate) for w in batch if w.result] == [
        (2, False),
        (1, True),
        (3, False),
    ]
    assert [row.key for row in stored(state)] == [series(2)]


def test_locked_alerts_answer_lock_alert_as_this_transaction_wrote_them(
    state: AppState,
) -> None:
    with state.db.begin() as conn, pipelined(conn):
        before = dict(store.lock_alert(conn, series(7)))
        store.write_alert(conn, series(7), {**before, "state": "open", "last_activity_id": 5})
    with state.db.begin() as conn, pipelined(conn), locked_alerts(conn, [series(8), series(7)]):
        existing = store.lock_alert(conn, series(7))
        created = store.lock_alert(conn, series(8))
        assert (existing["state"], existing["last_activity_id"]) == ("open", 5)
        assert (created["state"], created["last_activity_id"]) == ("closed", None)
        store.write_alert(conn, series(8), {**created, "state": "open", "last_activity_id": 9})
        again = store.lock_alert(conn, series(8))
        assert (again["state"], again["last_activity_id"]) == ("open", 9)
    with state.db.connect() as conn:
        states = {
            row.key: row.state for row in conn.execute(sa.text("SELECT key, state FROM alerts"))
        }
    assert states == {series(7): "open", series(8): "open"}
