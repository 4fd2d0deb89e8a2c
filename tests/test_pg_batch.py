"""A batch on PostgreSQL: statements sent ahead in pipeline mode, activities taken for new.

The group committer stores a batch on PostgreSQL with psycopg's pipeline mode
(app.storage.prepared.pipelined) and speculative activity INSERTs
(app.storage.activities.speculative_inserts). What a delivery's answer means must not
change: each id is stored once and only a new one runs the stages; a redelivery
(of a stored id, or twice in one batch) is a duplicate; a delivery that fails fails
alone, whether its error comes from Python or from a statement sent ahead. The tests
that need no pipeline run on both backends, as the same promise.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from app.ingest import group_commit
from app.ingest.group_commit import GroupCommitter, _Waiting
from app.ingest.pipeline import Stage, StoredActivity
from app.state import AppState
from app.storage import activities as store
from app.storage.alerts import all_alerts
from app.storage.prepared import Prepared, pipelined, pipelining_supported
from app.storage.tables import activities, alert_activities, spec_drift
from tests.support import body, condition_activity


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture
def committer(state: AppState) -> Iterator[GroupCommitter]:
    """A committer acting as its own writer thread (this test's thread), so that a batch
    is stored exactly as the writer stores it, with the connection it keeps."""
    committer = GroupCommitter(state)
    committer._thread = threading.current_thread()
    yield committer
    committer._release()


def pg_only(state: AppState) -> None:
    if not pipelining_supported(state.db.engine):
        pytest.skip("PostgreSQL (psycopg pipeline mode) only")


def waiting(loop: asyncio.AbstractEventLoop, payload: dict[str, Any]) -> _Waiting:
    return _Waiting(body(payload), payload, "webhook", loop, loop.create_future())


def store_batch(
    committer: GroupCommitter, loop: asyncio.AbstractEventLoop, payloads: list[dict[str, Any]]
) -> list[_Waiting]:
    """Store ``payloads`` as one batch, the way the writer thread does."""
    batch = [waiting(loop, payload) for payload in payloads]
    committer._store(batch)
    return batch


def outcome(item: _Waiting) -> tuple[int, bool] | str:
    if item.error is not None:
        return type(item.error).__name__
    assert item.result is not None
    return (item.result.id, item.result.duplicate)


def rows_per_id(state: AppState) -> dict[int, int]:
    with state.db.connect() as conn:
        rows = conn.execute(
            sa.select(activities.c.id, sa.func.count()).group_by(activities.c.id)
        ).all()
    return {int(activity_id): int(n) for activity_id, n in rows}


def linked_ids(state: AppState) -> list[int]:
    with state.db.connect() as conn:
        return sorted(conn.execute(sa.select(alert_activities.c.activity_id)).scalars())


class Counting:
    """A stage that counts the activities it ran for, committed or not."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, _conn: Any, _payload: dict[str, Any], stored: StoredActivity) -> None:
        self.seen.append(stored.id)


def test_duplicates_in_the_batch_and_against_stored_rows(
    state: AppState, committer: GroupCommitter, loop: asyncio.AbstractEventLoop
) -> None:
    first = store_batch(committer, loop, [condition_activity(1)])
    assert [outcome(w) for w in first] == [(1, False)]

    batch = store_batch(
        committer,
        loop,
        [condition_activity(i) for i in (2, 1, 2, 3, 3)],
    )

    assert [outcome(w) for w in batch] == [(2, False), (1, True), (2, True), (3, False), (3, True)]
    assert rows_per_id(state) == {1: 1, 2: 1, 3: 1}
    # The alert stage ran once for each new activity, never for a duplicate.
    assert linked_ids(state) == [1, 2, 3]


def test_a_stored_id_taken_for_new_rolls_the_batch_back_and_runs_it_again(
    state: AppState, committer: GroupCommitter, loop: asyncio.AbstractEventLoop
) -> None:
    pg_only(state)
    store_batch(committer, loop, [condition_activity(5)])
    counting = Counting()
    state.pipeline.stages.append(Stage("counting", counting))

    batch = store_batch(committer, loop, [condition_activity(i) for i in (4, 5, 6)])

    assert [outcome(w) for w in batch] == [(4, False), (5, True), (6, False)]
    # First try: 5 taken for new (its INSERT's answer not awaited), the stages ran for
    # it, the transaction was rolled back; second try: 5 awaited, a duplicate.
    assert counting.seen == [4, 5, 6, 4, 6]
    assert rows_per_id(state) == {4: 1, 5: 1, 6: 1}
    assert linked_ids(state) == [4, 5, 6]


def test_a_stage_failing_in_the_middle_of_a_batch_fails_that_delivery_alone(
    state: AppState, committer: GroupCommitter, loop: asyncio.AbstractEventLoop
) -> None:
    def failing(_conn: Any, _payload: dict[str, Any], stored: StoredActivity) -> None:
        if stored.id == 12:
            raise RuntimeError("a bug in a stage")

    state.pipeline.stages.append(Stage("failing", failing))

    batch = store_batch(committer, loop, [condition_activity(i) for i in (11, 12, 13)])

    assert [outcome(w) for w in batch] == [(11, False), "RuntimeError", (13, False)]
    assert rows_per_id(state) == {11: 1, 13: 1}
    assert linked_ids(state) == [11, 13]


# A statement whose error PostgreSQL reports only when its answer arrives: spec_drift's
# count is NOT NULL. No rows returned, so inside a pipeline it is sent ahead.
_BAD_DRIFT = Prepared(
    lambda _dialect: sa.insert(spec_drift).values(
        field=sa.bindparam("field"), value="x", count=None, first_seen=0.0, last_seen=0.0
    )
)


def test_an_error_in_a_statement_sent_ahead_fails_its_delivery_alone(
    state: AppState, committer: GroupCommitter, loop: asyncio.AbstractEventLoop
) -> None:
    def bad_write(conn: Any, _payload: dict[str, Any], stored: StoredActivity) -> None:
        if stored.id == 22:
            _BAD_DRIFT.execute(conn, {"field": "f"})

    state.pipeline.stages.append(Stage("bad-write", bad_write))

    batch = store_batch(committer, loop, [condition_activity(i) for i in (21, 22, 23)])

    assert [outcome(w) for w in batch] == [(21, False), "IntegrityError", (23, False)]
    assert rows_per_id(state) == {21: 1, 23: 1}
    assert linked_ids(state) == [21, 23]
    assert isinstance(batch[1].error, sa.exc.IntegrityError)  # wrapped as Core wraps it


def test_a_core_statement_sees_what_was_sent_ahead_and_errors_are_wrapped(
    state: AppState,
) -> None:
    pg_only(state)
    ok = Prepared(
        lambda _dialect: sa.insert(spec_drift).values(
            field=sa.bindparam("field"), value="v", count=1, first_seen=0.0, last_seen=0.0
        )
    )
    with state.db.begin() as conn, pipelined(conn) as on:
        assert on
        assert ok.execute(conn, {"field": "a"}) == []  # sent, not awaited
        # A Core statement ends the pipeline first: it sees the row.
        assert conn.execute(sa.select(sa.func.count()).select_from(spec_drift)).scalar() == 1
        ok.execute(conn, {"field": "b"})
    with state.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(spec_drift)).scalar() == 2

    with (
        pytest.raises(sa.exc.IntegrityError),
        state.db.begin() as conn,
        pipelined(conn),
    ):
        _BAD_DRIFT.execute(conn, {"field": "c"})  # its error is raised when the block ends
    with state.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(spec_drift)).scalar() == 2


@pytest.fixture
def driver_calls(state: AppState) -> Iterator[list[tuple[str, bool]]]:
    """(what, in pipeline mode) for every statement psycopg sends and every row fetch."""
    calls: list[tuple[str, bool]] = []
    execute, fetchall = psycopg.Cursor.execute, psycopg.Cursor.fetchall

    def recording_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append((str(query).split()[0].upper(), self.connection._pipeline is not None))
        return execute(self, query, *args, **kwargs)

    def recording_fetchall(self: Any) -> Any:
        calls.append(("fetch", self.connection._pipeline is not None))
        return fetchall(self)

    psycopg.Cursor.execute = recording_execute  # type: ignore[method-assign]
    psycopg.Cursor.fetchall = recording_fetchall  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        psycopg.Cursor.fetchall = fetchall  # type: ignore[method-assign]


def test_a_batch_waits_once_for_all_its_alert_locks(
    state: AppState,
    committer: GroupCommitter,
    loop: asyncio.AbstractEventLoop,
    driver_calls: list[tuple[str, bool]],
) -> None:
    pg_only(state)
    store_batch(committer, loop, [condition_activity(30)])  # warm: connection, entity cache
    driver_calls.clear()

    n = 8
    batch = store_batch(committer, loop, [condition_activity(100 + i) for i in range(n)])

    assert all(outcome(w) == (100 + i, False) for i, w in enumerate(batch))
    statements = [(what, on) for what, on in driver_calls if what != "fetch"]
    # The batch's alerts locked by one statement (INSERT … SELECT unnest … ON CONFLICT
    # DO UPDATE … RETURNING), then per delivery: the activity INSERT, link (INSERT) and
    # write (UPDATE); all sent in pipeline mode.
    assert len(statements) == 1 + 3 * n
    assert statements[0][0] == "INSERT"
    assert all(on for _, on in statements)
    # Waited for inside the pipeline: the locked alerts' rows, once for the batch. The
    # rest is answered by the pipeline's end and the COMMIT: 3 waits for the server
    # instead of 4n + 2 (plus a ping at checkout, which the kept connection no longer
    # needs).
    waits_in_pipeline = [what for what, on in driver_calls if what == "fetch" and on]
    assert len(waits_in_pipeline) == 1
    with state.db.engine.connect() as conn:
        stored = {row.key: row for row in all_alerts(conn)}
    assert all(stored[str(uuid.UUID(int=100 + i))].state == "open" for i in range(n))


def test_the_writer_keeps_its_connection_between_close_batches_only(
    state: AppState,
    committer: GroupCommitter,
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each checkout from the pool pings the server (pool_pre_ping): one more round
    trip per batch, which the writer saves while batches follow each other."""
    pg_only(state)
    checkouts: list[int] = []

    def count(*_args: Any) -> None:
        checkouts.append(1)

    sa.event.listen(state.db.engine, "checkout", count)
    try:
        store_batch(committer, loop, [condition_activity(40)])
        held = committer._held
        assert held is not None and len(checkouts) == 1
        store_batch(committer, loop, [condition_activity(41)])
        assert committer._held is held and len(checkouts) == 1  # kept: no checkout

        monkeypatch.setattr(group_commit, "HOLD_SECONDS", 0.0)
        store_batch(committer, loop, [condition_activity(42)])
        assert len(checkouts) == 2  # idle too long: back to the pool, checked out again
    finally:
        sa.event.remove(state.db.engine, "checkout", count)
    assert rows_per_id(state) == {40: 1, 41: 1, 42: 1}


def test_a_failed_batch_gives_its_kept_connection_back(
    state: AppState, committer: GroupCommitter, loop: asyncio.AbstractEventLoop
) -> None:
    pg_only(state)
    store_batch(committer, loop, [condition_activity(50)])
    assert committer._held is not None

    def failing(_conn: Any, _payload: dict[str, Any], _stored: StoredActivity) -> None:
        raise RuntimeError("boom")

    state.pipeline.stages.append(Stage("failing", failing))
    batch = store_batch(committer, loop, [condition_activity(51)])
    assert outcome(batch[0]) == "RuntimeError"
    assert committer._held is None
    state.pipeline.stages.pop()
    batch = store_batch(committer, loop, [condition_activity(52)])
    assert outcome(batch[0]) == (52, False)


def test_insert_activity_outside_a_pipeline_answers_for_real(state: AppState) -> None:
    """speculative_inserts without a pipeline (SQLite) waits for every answer."""
    row: dict[str, Any] = {column.key: None for column in activities.c}
    row.update(id=60, source="webhook", received_at=1.0, raw=b"{}")
    with state.db.begin() as conn, store.speculative_inserts(conn):
        assert store.insert_activity(conn, row) is True
        assert store.insert_activity(conn, row) is False
