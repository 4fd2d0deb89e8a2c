"""Group commit: deliveries that arrive together share a commit, and nothing else changes.

Every delivery is answered only after the commit that holds it; a redelivery is a
duplicate whether its first copy is in an earlier transaction or in the same one; a
delivery that fails for its own reason fails alone; a database failure fails the batch.

Both ways a committer runs are covered (the ``backend`` fixture): ``sqlite`` stores
batches on the event loop (SQLite with the writer lock, the default), while
``sqlite-threads`` (SQLite without the writer lock) and ``postgresql`` store them on
a writer thread.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from app.ingest.group_commit import GroupCommitter, committer_for, stop_committer
from app.ingest.pipeline import Stage, StoredActivity
from app.ingest.service import IngestResult
from app.state import AppState
from app.storage import activities as store
from app.storage.tables import activities
from tests.support import (
    INGEST_PATH,
    PG_ADMIN_URL,
    WEBHOOK_HEADERS,
    LiveServer,
    body,
    condition_activity,
    migrated_empty_database,
    minimal_activity,
)

Hook = Callable[[Any, dict[str, Any], StoredActivity], None]
Outcome = IngestResult | BaseException

# The committer's two ways of running, on the backends where each runs.
BACKEND_MODES = ["sqlite", "sqlite-threads"] + (["postgresql"] if PG_ADMIN_URL else [])
# For the tests of loop mode only (SQLite with the writer lock).
LOOP_MODE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture(params=BACKEND_MODES)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite``: batches on the event loop; ``sqlite-threads`` (no writer lock) and
    ``postgresql``: batches on the writer thread."""
    mode: str = request.param
    return mode


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database for ``backend`` (overrides conftest's fixture)."""
    kind = "sqlite" if backend.startswith("sqlite") else backend
    return migrated_empty_database(request, tmp_path, kind)


@pytest.fixture
def settings(settings: dict[str, Any], backend: str) -> dict[str, Any]:
    """conftest's settings; ``sqlite-threads`` turns the SQLite writer lock off."""
    if backend == "sqlite-threads":
        return {**settings, "sqlite_writer_lock": "0"}
    return settings


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
    """The app's committer; stopped after the test."""
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
    Thread mode only: in loop mode the hook would hold the event loop itself.
    """

    def __init__(self, blocker_id: int) -> None:
        self.blocker_id = blocker_id
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, _conn: Any, _payload: dict[str, Any], stored: StoredActivity) -> None:
        if stored.id == self.blocker_id:
            self.entered.set()
            assert self.release.wait(10), "gate never released"


@contextmanager
def writer_lock_held_elsewhere(state: AppState) -> Iterator[Callable[[], None]]:
    """The SQLite writer lock taken through another open file description of
    ``<db>.writer-lock``, which excludes this process like another worker's does.
    Yields ``release()``; released at the latest when the block ends."""
    lock = state.db.writer_lock
    assert lock is not None
    fd = os.open(lock.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    held = True

    def release() -> None:
        nonlocal held
        if held:
            fcntl.flock(fd, fcntl.LOCK_UN)
            held = False

    try:
        yield release
    finally:
        release()
        os.close(fd)


@dataclass
class Held:
    """What :func:`batches_held` holds: ``release()`` lets the committer take a batch."""

    release: Callable[[], None]
    # Rows stored by the holding itself (thread mode: the blocker delivery).
    blocker_ids: list[int] = field(default_factory=list)


@asynccontextmanager
async def batches_held(
    state: AppState, committer: GroupCommitter, blocker_id: int = 1
) -> AsyncIterator[Held]:
    """Until ``release()``, the committer stores nothing, so submissions queue up.

    Loop mode: another open file description holds the writer lock (the loop re-polls).
    Thread mode: a :class:`Gate` holds the writer thread inside the transaction of
    delivery ``blocker_id``, which is stored (new) in a batch of its own.
    """
    if committer._on_loop:
        with writer_lock_held_elsewhere(state) as release:
            yield Held(release)
        return
    gate = Gate(blocker_id)
    state.pipeline.stages.insert(0, Stage("gate", gate))
    try:
        blocker = asyncio.create_task(submit(committer, minimal_activity(blocker_id)))
        assert await asyncio.to_thread(gate.entered.wait, 5), "the blocker never reached the gate"
        try:
            yield Held(gate.release.set, [blocker_id])
        finally:
            gate.release.set()
            first = await blocker
        assert (first.id, first.duplicate) == (blocker_id, False)
    finally:
        state.pipeline.stages.remove(Stage("gate", gate))


@dataclass
class Together:
    """Deliveries submitted so that they land in one batch, and how they ended."""

    outcomes: list[Outcome]
    # Batches committed for these deliveries (committer.batches; a failed batch whose
    # deliveries were then stored one by one counts none).
    batches: int
    blocker_ids: list[int]

    def results(self) -> list[IngestResult]:
        assert all(isinstance(o, IngestResult) for o in self.outcomes), self.outcomes
        return [o for o in self.outcomes if isinstance(o, IngestResult)]


async def submit_together(
    state: AppState, committer: GroupCommitter, payloads: list[dict[str, Any]]
) -> Together:
    """Submit ``payloads`` so that the committer takes them as one batch.

    Loop mode: submitted in one iteration of the loop (gather), before the flush that
    the first one schedules runs. Thread mode: queued behind :func:`batches_held`.
    """
    if committer._on_loop:
        before = committer.batches
        outcomes = await asyncio.gather(
            *(submit(committer, p) for p in payloads), return_exceptions=True
        )
        return Together(list(outcomes), committer.batches - before, [])
    async with batches_held(state, committer) as held:
        before = committer.batches
        together = asyncio.gather(*(submit(committer, p) for p in payloads), return_exceptions=True)
        await asyncio.to_thread(wait_for, lambda: len(committer._queue) == len(payloads))
        held.release()
        outcomes = await together
    # The blocker's batch committed after ``before`` was read.
    return Together(list(outcomes), committer.batches - before - 1, held.blocker_ids)


def fail_for(activity_id: int) -> Hook:
    def hook(_conn: Any, _payload: dict[str, Any], stored: StoredActivity) -> None:
        if stored.id == activity_id:
            raise ValueError(f"hook bug on {activity_id}")

    return hook


def post(url: str, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS, timeout=20)


def failed_batches(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The committer's warnings about a batch that failed and was stored one by one."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "app.ingest.group_commit" and "failed" in r.getMessage()
    ]


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


def test_each_backend_runs_the_committer_its_own_way(
    backend: str, state: AppState, committer: GroupCommitter
) -> None:
    # The parametrization is what covers both modes: make sure each variant is the
    # mode it claims to be.
    assert committer._on_loop is (backend == "sqlite")
    assert (state.db.writer_lock is not None) is (backend == "sqlite")


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
    pair = [minimal_activity(700, message="first"), minimal_activity(700, message="second")]
    together = asyncio.run(submit_together(state, committer, pair))
    assert together.batches == 1, "the pair did not share one transaction"
    assert [(r.id, r.duplicate) for r in together.results()] == [(700, False), (700, True)]
    assert row_count(state, 700) == 1
    assert stored_ids(state) == sorted([*together.blocker_ids, 700])
    with state.db.connect() as conn:
        kept = store.get_activity(conn, 700)
        assert kept is not None and kept.message == "first"


def test_a_failing_delivery_fails_alone_and_the_rest_of_its_batch_is_stored(
    state: AppState, committer: GroupCommitter, caplog: pytest.LogCaptureFixture
) -> None:
    state.pipeline.stages.append(Stage("fail", fail_for(803)))
    batch = [801, 802, 803, 804, 805]
    with caplog.at_level(logging.WARNING, logger="app.ingest.group_commit"):
        together = asyncio.run(
            submit_together(state, committer, [condition_activity(i) for i in batch])
        )
    # The five were one batch: it failed as a whole, then each was stored alone.
    assert failed_batches(caplog) == [
        "group commit: a batch of 5 failed (ValueError); storing each alone"
    ]
    assert together.batches == 0
    failed = together.outcomes[batch.index(803)]
    assert isinstance(failed, ValueError) and "803" in str(failed)
    others = [r for i, r in zip(batch, together.outcomes, strict=True) if i != 803]
    assert [(r.id, r.duplicate) for r in others if isinstance(r, IngestResult)] == [
        (801, False),
        (802, False),
        (804, False),
        (805, False),
    ]
    assert stored_ids(state) == sorted([*together.blocker_ids, 801, 802, 804, 805])


def test_a_database_failure_fails_every_delivery_of_the_batch_and_stores_nothing(
    state: AppState, client: Any, committer: GroupCommitter
) -> None:
    ids = [901, 902, 903, 904]
    with writers_locked_out(state):

        async def run() -> list[Outcome]:
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
    queued = [11, 12, 13]

    async def run() -> tuple[list[IngestResult], list[int]]:
        async with batches_held(state, committer) as held:
            waiting = asyncio.gather(*(submit(committer, minimal_activity(i)) for i in queued))
            await asyncio.to_thread(wait_for, lambda: len(committer._queue) == len(queued))
            stopping = asyncio.create_task(asyncio.to_thread(stop_committer, state))
            # stop() has begun (new submissions are refused) while the queue is still held.
            await asyncio.to_thread(wait_for, lambda: committer._stopping)
            with pytest.raises(RuntimeError):
                await submit(committer, minimal_activity(99))
            assert not waiting.done()
            held.release()
            await stopping
            results = list(await waiting)
        return results, held.blocker_ids

    results, blocker_ids = asyncio.run(run())
    assert [(r.id, r.duplicate) for r in results] == [(i, False) for i in queued]
    assert stored_ids(state) == sorted([*blocker_ids, *queued])
    with pytest.raises(RuntimeError):
        asyncio.run(submit(committer, minimal_activity(98)))
    assert 98 not in stored_ids(state) and 99 not in stored_ids(state)


def test_a_hook_failure_through_http_is_a_problem_and_spares_its_neighbour(
    server: LiveServer, state: AppState, caplog: pytest.LogCaptureFixture
) -> None:
    state.pipeline.stages.append(Stage("fail", fail_for(77)))
    committer = committer_for(state)
    with caplog.at_level(logging.WARNING, logger="app.ingest.group_commit"):
        if committer._on_loop:
            # Loop mode: the writer lock is held elsewhere until both are queued.
            blocker_ids: list[int] = []
            with (
                writer_lock_held_elsewhere(state) as release,
                ThreadPoolExecutor(2) as pool,
            ):
                bad = pool.submit(post, server.url, condition_activity(77))
                good = pool.submit(post, server.url, condition_activity(78))
                wait_for(lambda: len(committer._queue) == 2)
                release()
                bad_answer, good_answer = bad.result(), good.result()
        else:
            # Thread mode: the writer thread is held inside the blocker's transaction.
            gate = Gate(blocker_id=1)
            state.pipeline.stages.insert(0, Stage("gate", gate))
            blocker_ids = [1]
            with ThreadPoolExecutor(3) as pool:
                blocker = pool.submit(post, server.url, minimal_activity(1))
                assert gate.entered.wait(5)
                bad = pool.submit(post, server.url, condition_activity(77))
                good = pool.submit(post, server.url, condition_activity(78))
                wait_for(lambda: len(committer._queue) == 2)
                gate.release.set()
                assert blocker.result().status_code == 200
                bad_answer, good_answer = bad.result(), good.result()
    # The two shared a batch, which failed and was stored one by one.
    assert failed_batches(caplog) == [
        "group commit: a batch of 2 failed (ValueError); storing each alone"
    ]
    # An unexpected exception in a hook is a server bug: Connexion answers 500.
    assert bad_answer.status_code == 500
    assert bad_answer.headers["content-type"] == "application/problem+json"
    assert bad_answer.json()["status"] == 500
    assert good_answer.status_code == 200
    assert good_answer.json() == {"id": 78, "duplicate": False}
    assert stored_ids(state) == [*blocker_ids, 78]


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


# Loop mode (SQLite with the writer lock): batches run on the event loop.


@LOOP_MODE_ONLY
def test_deliveries_wait_for_a_writer_lock_held_elsewhere_while_the_loop_keeps_serving(
    server: LiveServer, state: AppState
) -> None:
    committer = committer_for(state)
    assert committer._on_loop
    first_copies = [minimal_activity(i, message="first") for i in (41, 42, 43)]
    redelivery = minimal_activity(41, message="again")
    with writer_lock_held_elsewhere(state) as release, ThreadPoolExecutor(4) as pool:
        answers = [pool.submit(post, server.url, p) for p in first_copies]
        wait_for(lambda: len(committer._queue) == 3)
        # Queued after the first copies: the redelivery comes later in the same batch.
        answers.append(pool.submit(post, server.url, redelivery))
        wait_for(lambda: len(committer._queue) == 4)
        # The loop is not blocked: the same server answers other requests at once.
        with httpx.Client(base_url=server.url, timeout=5) as http:
            for _ in range(5):
                started = time.monotonic()
                health = http.get("/healthz")
                assert health.status_code == 200
                assert time.monotonic() - started < 1.0
        # ... while the deliveries still wait, with nothing stored.
        assert not any(a.done() for a in answers)
        assert len(committer._queue) == 4
        assert stored_ids(state) == []
        batches, stored = committer.batches, committer.stored
        release()
        results = [a.result(timeout=20) for a in answers]
    assert [a.status_code for a in results] == [200] * 4
    assert [a.json() for a in results] == [
        {"id": 41, "duplicate": False},
        {"id": 42, "duplicate": False},
        {"id": 43, "duplicate": False},
        {"id": 41, "duplicate": True},
    ]
    # Everything that waited went in one batch, each id stored exactly once.
    assert (committer.batches - batches, committer.stored - stored) == (1, 4)
    assert stored_ids(state) == [41, 42, 43]
    assert row_count(state, 41) == 1
    with state.db.connect() as conn:
        kept = store.get_activity(conn, 41)
        assert kept is not None and kept.message == "first"


@LOOP_MODE_ONLY
def test_full_answers_a_batch_only_after_the_wal_sync_that_covers_it(
    make_app: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = make_app(sqlite_synchronous="FULL").app.extensions["ninjahook"]
    lock = state.db.writer_lock
    assert lock is not None and state.db.syncs_wal
    committer = committer_for(state)
    assert committer._on_loop
    real_sync = state.db.sync_wal
    syncs: list[dict[str, Any]] = []
    entered, proceed = threading.Event(), threading.Event()

    def sync_wal() -> None:
        syncs.append(
            {
                "thread": threading.current_thread().name,
                "lock_depth": lock._depth,
                # Committed (visible to another connection) before the sync.
                "visible": stored_ids(state),
            }
        )
        entered.set()
        assert proceed.wait(10), "the test never let the sync proceed"
        real_sync()
        syncs[-1]["done"] = True

    monkeypatch.setattr(state.db, "sync_wal", sync_wal)
    ids = [51, 52, 53]

    async def run() -> tuple[list[IngestResult], int]:
        loop_thread = threading.current_thread().name
        tasks = [asyncio.create_task(submit(committer, minimal_activity(i))) for i in ids]
        assert await asyncio.to_thread(entered.wait, 5), "no WAL sync for the batch"
        # The batch is committed and its sync has begun: nobody is answered yet.
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in tasks)
        assert syncs == [{"thread": syncs[0]["thread"], "lock_depth": 0, "visible": ids}]
        assert syncs[0]["thread"] != loop_thread  # in the executor, not on the loop
        proceed.set()
        results = await asyncio.gather(*tasks)
        assert syncs[0].get("done") is True
        # One more, alone: its sync is recorded by the time it is answered.
        single = await submit(committer, minimal_activity(54))
        assert len(syncs) == 2 and syncs[1]["done"] is True
        assert syncs[1]["visible"] == [*ids, 54]
        return [*results, single], committer.batches

    try:
        results, batches = asyncio.run(run())
    finally:
        proceed.set()
        stop_committer(state)
    assert [(r.id, r.duplicate) for r in results] == [(i, False) for i in [*ids, 54]]
    assert batches == 2  # one sync per batch
    assert [s["lock_depth"] for s in syncs] == [0, 0]  # taken after the lock was released


@LOOP_MODE_ONLY
def test_full_with_a_failing_sync_fails_the_whole_batch_after_its_commit(
    make_app: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(sqlite_synchronous="FULL")
    state = app.app.extensions["ninjahook"]
    committer = committer_for(state)
    assert committer._on_loop and state.db.syncs_wal
    real_sync = state.db.sync_wal
    failures: list[str] = []

    def failing_sync() -> None:
        failures.append(threading.current_thread().name)
        raise sa.exc.OperationalError("fsync of the SQLite WAL", None, OSError(5, "EIO"))

    monkeypatch.setattr(state.db, "sync_wal", failing_sync)
    ids = [61, 62, 63]
    try:
        together = asyncio.run(
            submit_together(state, committer, [minimal_activity(i) for i in ids])
        )
    finally:
        stop_committer(state)
    assert together.batches == 1 and len(failures) == 1
    assert [type(o) for o in together.outcomes] == [sa.exc.OperationalError] * 3
    # Committed, only not known to be durable.
    assert stored_ids(state) == ids

    with app.test_client() as client:
        r = client.post(INGEST_PATH, content=body(minimal_activity(64)), headers=WEBHOOK_HEADERS)
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["retry-after"] == "5"
        assert stored_ids(state) == [*ids, 64]
        monkeypatch.setattr(state.db, "sync_wal", real_sync)
        # The sender's retries, once the disk is back: duplicates.
        for activity_id in [*ids, 64]:
            payload = minimal_activity(activity_id)
            r = client.post(INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS)
            assert r.status_code == 200
            assert r.json() == {"id": activity_id, "duplicate": True}
    assert stored_ids(state) == [*ids, 64]


@LOOP_MODE_ONLY
def test_a_writer_lock_file_that_cannot_be_opened_is_a_503_not_a_hang(
    server: LiveServer, state: AppState, tmp_path: Path
) -> None:
    lock = state.db.writer_lock
    assert lock is not None
    committer = committer_for(state)
    assert committer._on_loop
    real_path = lock.path
    if lock._fd is not None:
        os.close(lock._fd)
    lock.path, lock._fd = tmp_path / "no-such-directory" / "n.writer-lock", None
    try:

        async def run() -> list[Outcome]:
            together = asyncio.gather(
                submit(committer, minimal_activity(71)),
                submit(committer, minimal_activity(72)),
                return_exceptions=True,
            )
            return list(await asyncio.wait_for(together, 5))

        outcomes = asyncio.run(run())
        answer = post(server.url, minimal_activity(73))
    finally:
        lock.path, lock._fd = real_path, None
    assert [type(o) for o in outcomes] == [sa.exc.OperationalError] * 2
    first = outcomes[0]
    assert isinstance(first, sa.exc.OperationalError)
    assert isinstance(first.orig, FileNotFoundError)
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "5"
    assert stored_ids(state) == []
    # The lock file can be opened again: the retry is stored, as new.
    answer = post(server.url, minimal_activity(73))
    assert answer.status_code == 200 and answer.json() == {"id": 73, "duplicate": False}
    assert stored_ids(state) == [73]
