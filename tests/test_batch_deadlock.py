"""PostgreSQL: a batch that PostgreSQL rolls back to break a deadlock is run again,
so the deliveries in it are answered, not failed as "database unavailable".

Two transactions storing one activity id can take its alert's lock and the id's
unique entry in opposite orders: a batch locks all its alerts first, while another
writer (a batch that holds the id twice, a backfill) inserts the activity and then
locks its alert. The test makes that deadlock happen for real."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import sqlalchemy as sa

from app.alerts.service import alert_key
from app.ingest.group_commit import GroupCommitter
from app.ingest.service import storable
from app.state import AppState
from app.storage import alerts as alert_store
from app.storage.tables import activities
from tests.support import body, condition_activity
from tests.test_batch_alert_locks import committer, loop, store_batch

__all__ = ["committer", "loop"]  # fixtures, used by name


def test_a_batch_rolled_back_by_a_deadlock_is_run_again(
    state: AppState, committer: GroupCommitter, loop: asyncio.AbstractEventLoop
) -> None:
    if state.db.is_sqlite:
        pytest.skip("PostgreSQL only: SQLite has one writer at a time")
    payload = condition_activity(77, series_uid="5b1e0d1c-0000-4000-8000-00000000dead")
    key = alert_key(payload)
    assert key is not None
    _payload, row = storable(payload, body(payload), "webhook", time.time())
    inserted, failures = threading.Event(), []

    def other_writer() -> None:
        # Inserts the activity, waits until the batch holds the alert and waits for the
        # id, then asks for the alert: a deadlock PostgreSQL breaks by rolling one back.
        try:
            with state.db.engine.connect() as conn, conn.begin():
                conn.execute(sa.insert(activities).values(**row))
                inserted.set()
                time.sleep(0.3)
                alert_store.lock_alert(conn, key)
        except Exception as exc:  # the batch or this one may be the one rolled back
            failures.append(exc)

    thread = threading.Thread(target=other_writer)
    thread.start()
    assert inserted.wait(10)
    (answered,) = store_batch(committer, loop, [payload])  # asserts no error
    thread.join(30)
    assert answered.result is not None and answered.result.id == 77
    with state.db.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).select_from(activities).where(activities.c.id == 77)
        ).scalar()
    assert count == 1
    # Whichever transaction PostgreSQL chose, the delivery was answered: new if the
    # other writer was rolled back, a duplicate of its row if the batch was.
    assert answered.result.duplicate is (not failures)
