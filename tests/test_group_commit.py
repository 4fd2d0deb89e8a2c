"""Group commit: deliveries that arrive together share a commit, and nothing else changes.

Every delivery is answered only after the commit that holds it; a redelivery is a
duplicate whether its first copy is in an earlier transaction or in the same one; a
delivery that fails for its own reason fails alone; a database failure fails the batch.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from app.group_commit import GroupCommitter, committer_for, stop_committer
from app.ingest import IngestResult
from app.state import AppState, StoredActivity
from app.storage import activities as store
from app.storage.tables import activities
from tests.support import (
    INGEST_PATH,
    WEBHOOK_HEADERS,
    LiveServer,
    body,
    condition_activity,
    minimal_activity,
)

Hook = Callable[[Any, dict[str, Any], StoredActivity], None]


def stored_ids(state: AppState) -> list[int]:
    with state.db.connect() as conn:
        return sorted(conn.execute(sa.select(activities.c.id)).scalars())


def row_count(state: AppState, activity_id: int) -> int:
    with state.db.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).select_from(activities).where(activities.c.id == activity_id)
        ).scalar()
    return int(count or 0)


@pytest.fixture
def committer(state: AppState) -> Iterator[GroupCommitter]:
    """The app's committer; its writer thread is stopped after the test."""
    yield committer_for(state)
    stop_committer(state)


async def submit(committer: GroupCommitter, payload: dict[str, Any]) -> IngestResult:
    return await committer.submit(body(payload), payload)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail the test when it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


class Gate:
    """A hook that holds the writer thread inside the transaction of ``blocker_id``.

    While it is held, later deliveries queue up; released, they are taken as one batch.
    """

    def __init__(self, blocker_id: int) -> None:
        self.blocker_id = blocker_id
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, _conn: Any, _payload: dict[str, Any], stored: StoredActivity) -> None:
        if stored.id == self.blocker_id:
            self.entered.set()
            assert self.release.wait(10), "gate never released"


def fail_for(activity_id: int) -> Hook:
    def hook(_conn: Any, _payload: dict[str, Any], stored: StoredActivity) -> None:
        if stored.id == activity_id:
            raise ValueError(f"hook bug on {activity_id}")

    return hook


def post(url: str, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS, timeout=20)


@contextmanager
def writers_locked_out(state: AppState) -> Iterator[None]:
    """Another session holds the write lock and the app's writes time out: a real
    database failure (SQLite: "database is locked"; PostgreSQL: lock_timeout)."""
    engine = state.db.engine

    def short_timeouts(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if state.db.is_sqlite:
            cur.execute("PRAGMA busy_timeout=50")
        else:
            cur.execute("SET lock_timeout = '50ms'")
        cur.close()
        if not state.db.is_sqlite:
            dbapi_conn.commit()

    sa.event.listen(engine, "connect", short_timeouts)
    engine.dispose()  # pooled connections are reopened with the short timeouts
    url = engine.url
    blocker: Any
    if state.db.is_sqlite:
        blocker = sqlite3.connect(str(url.database), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
    else:
        blocker = psycopg.connect(url.set(drivername="postgresql").render_as_string(False))
        blocker.execute("LOCK TABLE activities IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        blocker.rollback()
        blocker.close()
        sa.event.remove(engine, "connect", short_timeouts)
        engine.dispose()


def test_concurrent_deliveries_through_a_server_share_commits_and_are_stored_once(
    server: LiveServer, state: AppState
) -> None:
    ids = list(range(10_000, 10_032))
    # 64 deliveries, every id twice: a redelivery racing its first copy stores no row.
    payloads = [minimal_activity(i) for i in ids] * 2
    with httpx.Client(base_url=server.url, headers=WEBHOOK_HEADERS, timeout=20) as http:

        def deliver(payload: dict[str, Any]) -> httpx.Response:
            return http.post(INGEST_PATH, content=body(payload))

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(deliver, payloads))
    assert [a.status_code for a in answers] == [200] * len(payloads)
    by_id: dict[int, list[bool]] = {}
    for a in answers:
        by_id.setdefault(a.json()["id"], []).append(a.json()["duplicate"])
    assert sorted(by_id) == ids
    assert all(sorted(flags) == [False, True] for flags in by_id.values())
    assert stored_ids(state) == ids
    committer = committer_for(state)
    assert committer.stored == len(payloads)
    assert 0 < committer.batches < committer.stored


def test_a_submit_returns_only_after_its_commit(state: AppState, committer: GroupCommitter) -> None:
    seen: list[int] = []

    async def run() -> IngestResult:
        result = await submit(committer, condition_activity(501))
        # The very next thing after the answer: another connection must see the row.
        seen.extend(stored_ids(state))
        return result

    result = asyncio.run(run())
    assert result == IngestResult(id=501, duplicate=False, activity_type="CONDITION")
    assert seen == [501]


def test_the_same_id_twice_in_one_batch_is_one_new_and_one_duplicate(
    state: AppState, committer: GroupCommitter
) -> None:
    gate = Gate(blocker_id=1)
    state.new_activity_hooks.append(gate)

    async def run() -> tuple[IngestResult, int, list[IngestResult]]:
        blocker = asyncio.create_task(submit(committer, minimal_activity(1)))
        await asyncio.to_thread(gate.entered.wait, 5)
        batches_before = committer.batches
        pair = asyncio.gather(
            submit(committer, minimal_activity(700, message="first")),
            submit(committer, minimal_activity(700, message="second")),
        )
        await asyncio.to_thread(wait_for, lambda: len(committer._queue) == 2)
        gate.release.set()
        first = await blocker
        results = await pair
        # The blocker's batch and the pair's batch: two commits.
        return first, committer.batches - batches_before, list(results)

    first, batches, results = asyncio.run(run())
    assert first.duplicate is False
    assert batches == 2, "the pair did not share one transaction"
    assert [(r.id, r.duplicate) for r in results] == [(700, False), (700, True)]
    assert row_count(state, 700) == 1
    with state.db.connect() as conn:
        assert store.get_activity(conn, 700).message == "first"


def test_a_failing_delivery_fails_alone_and_the_rest_of_its_batch_is_stored(
    state: AppState, committer: GroupCommitter
) -> None:
    gate = Gate(blocker_id=1)
    state.new_activity_hooks.extend([gate, fail_for(803)])
    batch = [801, 802, 803, 804, 805]

    async def run() -> list[IngestResult | BaseException]:
        blocker = asyncio.create_task(submit(committer, minimal_activity(1)))
        await asyncio.to_thread(gate.entered.wait, 5)
        together = asyncio.gather(
            *(submit(committer, condition_activity(i)) for i in batch), return_exceptions=True
        )
        await asyncio.to_thread(wait_for, lambda: len(committer._queue) == len(batch))
        gate.release.set()
        await blocker
        return list(await together)

    results = asyncio.run(run())
    failed = results[batch.index(803)]
    assert isinstance(failed, ValueError) and "803" in str(failed)
    others = [r for i, r in zip(batch, results, strict=True) if i != 803]
    assert [(r.id, r.duplicate) for r in others if isinstance(r, IngestResult)] == [
        (801, False),
        (802, False),
        (804, False),
        (805, False),
    ]
    assert stored_ids(state) == [1, 801, 802, 804, 805]


def test_a_database_failure_fails_every_delivery_of_the_batch_and_stores_nothing(
    state: AppState, client: Any, committer: GroupCommitter
) -> None:
    ids = [901, 902, 903, 904]
    with writers_locked_out(state):

        async def run() -> list[IngestResult | BaseException]:
            return list(
                await asyncio.gather(
                    *(submit(committer, minimal_activity(i)) for i in ids),
                    return_exceptions=True,
                )
            )

        results = asyncio.run(run())
        r = client.post(INGEST_PATH, content=body(minimal_activity(905)), headers=WEBHOOK_HEADERS)
    assert [type(x) for x in results] == [sa.exc.OperationalError] * len(ids)
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "5"
    assert stored_ids(state) == []
    # The database is back: the sender's retry is stored as new.
    r = client.post(INGEST_PATH, content=body(minimal_activity(905)), headers=WEBHOOK_HEADERS)
    assert r.status_code == 200 and r.json() == {"id": 905, "duplicate": False}
    assert stored_ids(state) == [905]


def test_stop_stores_what_was_queued_and_refuses_what_comes_after(
    state: AppState, committer: GroupCommitter
) -> None:
    gate = Gate(blocker_id=1)
    state.new_activity_hooks.append(gate)
    queued = [11, 12, 13]

    async def run() -> list[IngestResult]:
        blocker = asyncio.create_task(submit(committer, minimal_activity(1)))
        await asyncio.to_thread(gate.entered.wait, 5)
        waiting = asyncio.gather(*(submit(committer, minimal_activity(i)) for i in queued))
        await asyncio.to_thread(wait_for, lambda: len(committer._queue) == len(queued))
        stopping = asyncio.create_task(asyncio.to_thread(stop_committer, state))
        # stop() has begun (new submissions are refused) while the queue is still held.
        await asyncio.to_thread(wait_for, lambda: committer._stopping)
        with pytest.raises(RuntimeError):
            await submit(committer, minimal_activity(99))
        gate.release.set()
        await stopping
        await blocker
        return list(await waiting)

    results = asyncio.run(run())
    assert [(r.id, r.duplicate) for r in results] == [(i, False) for i in queued]
    assert stored_ids(state) == [1, *queued]
    with pytest.raises(RuntimeError):
        asyncio.run(submit(committer, minimal_activity(98)))
    assert 98 not in stored_ids(state) and 99 not in stored_ids(state)


def test_a_hook_failure_through_http_is_a_problem_and_spares_its_neighbour(
    server: LiveServer, state: AppState
) -> None:
    gate = Gate(blocker_id=1)
    state.new_activity_hooks.extend([gate, fail_for(77)])
    committer = committer_for(state)
    with ThreadPoolExecutor(3) as pool:
        blocker = pool.submit(post, server.url, minimal_activity(1))
        assert gate.entered.wait(5)
        bad = pool.submit(post, server.url, condition_activity(77))
        good = pool.submit(post, server.url, condition_activity(78))
        wait_for(lambda: len(committer._queue) == 2)
        gate.release.set()
        assert blocker.result().status_code == 200
        bad_answer, good_answer = bad.result(), good.result()
    # An unexpected exception in a hook is a server bug: Connexion answers 500.
    assert bad_answer.status_code == 500
    assert bad_answer.headers["content-type"] == "application/problem+json"
    assert bad_answer.json()["status"] == 500
    assert good_answer.status_code == 200
    assert good_answer.json() == {"id": 78, "duplicate": False}
    assert stored_ids(state) == [1, 78]


def test_the_app_still_ingests_after_its_lifespan_restarts(app: Any, state: AppState) -> None:
    """A second lifespan on the same app (a TestClient opened twice, a server restarted
    in-process) must find a working committer, not the one the first shutdown stopped."""
    with app.test_client() as client:
        r = client.post(INGEST_PATH, content=body(minimal_activity(31)), headers=WEBHOOK_HEADERS)
        assert r.status_code == 200
    with app.test_client() as client:
        r = client.post(INGEST_PATH, content=body(minimal_activity(32)), headers=WEBHOOK_HEADERS)
        assert r.status_code == 200, r.text
    assert stored_ids(state) == [31, 32]
