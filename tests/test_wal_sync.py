"""synchronous=FULL on SQLite: NORMAL inside SQLite, one WAL fsync after each commit,
taken after the writer lock is released, and a failed fsync answered as a database
failure. SQLite only: the ``database_url`` fixture is narrowed to it here.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.storage import activities as store
from app.storage.db import Database
from app.storage.tables import activities
from tests.support import (
    INGEST_PATH,
    WEBHOOK_HEADERS,
    body,
    condition_activity,
    migrated_empty_database,
    minimal_activity,
)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty SQLite file (overrides conftest's fixture: no PostgreSQL here)."""
    return migrated_empty_database(request, tmp_path, "sqlite")


@pytest.fixture
def open_db(tmp_path: Path) -> Iterator[Callable[..., Database]]:
    """Databases on files of their own under tmp_path, migrated, disposed after the test."""
    made: list[Database] = []

    def make(name: str = "wal.sqlite3", **options: Any) -> Database:
        db = Database(f"sqlite:///{tmp_path / name}", **options)
        db.migrate()
        made.append(db)
        return db

    yield make
    for db in made:
        db.dispose()


def synchronous(db: Database) -> int:
    with db.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


def insert(db: Database, activity_id: int) -> None:
    row: dict[str, Any] = {c.key: None for c in activities.c}
    row.update(id=activity_id, source="webhook", received_at=1.0, raw=b"{}")
    with db.begin() as conn:
        assert store.insert_activity(conn, row)


def spy_on_sync(db: Database) -> list[int | None]:
    """Record, for every WalSync.sync call, the writer lock's depth at that moment."""
    assert db._wal_sync is not None
    calls: list[int | None] = []
    real_sync = db._wal_sync.sync
    lock = db._writer_lock

    def sync() -> None:
        calls.append(None if lock is None else lock._depth)
        real_sync()

    db._wal_sync.sync = sync  # type: ignore[method-assign]
    return calls


def fsynced_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of the files and directories os.fsync is called on (the real fsync runs)."""
    paths: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return paths


def test_full_runs_sqlite_with_normal_and_syncs_once_per_transaction_outside_the_lock(
    open_db: Callable[..., Database],
) -> None:
    db = open_db(sqlite_synchronous="FULL")
    assert db._wal_sync is not None and db._writer_lock is not None
    assert synchronous(db) == 1  # NORMAL
    calls = spy_on_sync(db)
    for activity_id in (1, 2, 3):
        insert(db, activity_id)
    assert calls == [0, 0, 0]  # one per transaction, each after the lock was released
    # A transaction that fails commits nothing and has nothing to sync.
    with pytest.raises(ZeroDivisionError), db.begin() as conn:
        conn.execute(sa.delete(activities))
        _ = 1 / 0
    assert calls == [0, 0, 0]
    with db.connect() as conn:
        assert store.count_activities(conn) == 3


def test_normal_has_no_wal_sync_and_full_without_the_writer_lock_still_syncs(
    open_db: Callable[..., Database],
) -> None:
    normal = open_db("normal.sqlite3")
    assert normal._wal_sync is None
    assert synchronous(normal) == 1
    insert(normal, 1)

    unlocked = open_db("unlocked.sqlite3", sqlite_synchronous="FULL", sqlite_writer_lock=False)
    assert unlocked._writer_lock is None and unlocked._wal_sync is not None
    assert synchronous(unlocked) == 1
    calls = spy_on_sync(unlocked)
    insert(unlocked, 1)
    insert(unlocked, 2)
    assert calls == [None, None]


@pytest.mark.parametrize("writer_lock", [True, False], ids=["writer-lock", "no-writer-lock"])
def test_full_syncs_once_when_the_outermost_writing_block_ends(
    open_db: Callable[..., Database], writer_lock: bool
) -> None:
    """Database.writing(): "the WAL is fsynced when the outermost block ends". The group
    committer's writer thread (thread mode) stores a batch as ``db.begin()`` inside
    ``db.writing()``: one fsync per batch, with or without the writer lock."""
    db = open_db(sqlite_synchronous="FULL", sqlite_writer_lock=writer_lock)
    calls = spy_on_sync(db)
    with db.writing():
        insert(db, 1)
        insert(db, 2)
        assert calls == []  # nothing synced before the outermost block ends
    assert len(calls) == 1
    with db.connect() as conn:
        assert store.count_activities(conn) == 2


def test_sync_without_a_wal_fsyncs_the_database_file(
    open_db: Callable[..., Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = open_db(sqlite_synchronous="FULL")
    assert db._wal_sync is not None
    insert(db, 1)
    with db.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()  # the last connection closes and SQLite removes the WAL
    assert not db._wal_sync.wal.exists()

    paths = fsynced_paths(monkeypatch)
    db._wal_sync.sync()
    assert paths == [str(db._wal_sync.database)]
    with db.connect() as conn:
        assert store.count_activities(conn) == 1


def test_a_recreated_wal_gets_its_directory_entry_synced(
    open_db: Callable[..., Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """WalSync's promise: "a WAL file that is new since the last sync gets its directory
    entry synced too". A WAL removed by the last connection and created again is new,
    even when the filesystem hands it the inode number of the removed one (ext4 does)."""
    db = open_db(sqlite_synchronous="FULL")
    assert db._wal_sync is not None
    insert(db, 1)  # the first WAL is synced and its directory too
    with db.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    assert not db._wal_sync.wal.exists()

    paths = fsynced_paths(monkeypatch)
    insert(db, 2)
    assert db._wal_sync.wal.exists()
    assert paths == [str(db._wal_sync.wal), str(db._wal_sync.wal.parent)]
    # The same WAL again: the file only.
    del paths[:]
    insert(db, 3)
    assert paths == [str(db._wal_sync.wal)]


def test_a_failed_fsync_is_an_operational_error_after_the_commit(
    open_db: Callable[..., Database], tmp_path: Path
) -> None:
    db = open_db(sqlite_synchronous="FULL")
    assert db._wal_sync is not None
    gone = tmp_path / "no-such-directory"
    db._wal_sync.wal = gone / "wal.sqlite3-wal"
    db._wal_sync.database = gone / "wal.sqlite3"
    with pytest.raises(sa.exc.OperationalError) as caught:
        insert(db, 1)
    assert isinstance(caught.value.orig, FileNotFoundError)
    # Committed but not known to be durable: the sender's retry will be a duplicate.
    with db.connect() as conn:
        assert store.count_activities(conn) == 1


def test_a_failed_fsync_through_the_app_is_503_and_the_retry_a_duplicate(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    app = make_app(sqlite_synchronous="FULL")
    state = app.app.extensions["ninjahook"]
    wal_sync = state.db._wal_sync
    assert wal_sync is not None
    real_wal, real_database = wal_sync.wal, wal_sync.database
    gone = tmp_path / "no-such-directory"
    with app.test_client() as client:
        wal_sync.wal, wal_sync.database = gone / "x-wal", gone / "x"
        r = client.post(INGEST_PATH, content=body(minimal_activity(5)), headers=WEBHOOK_HEADERS)
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["retry-after"] == "5"
        assert r.json()["status"] == 503
        wal_sync.wal, wal_sync.database = real_wal, real_database
        r = client.post(INGEST_PATH, content=body(minimal_activity(5)), headers=WEBHOOK_HEADERS)
        assert r.status_code == 200
        assert r.json() == {"id": 5, "duplicate": True}


@pytest.mark.parametrize("writer_lock", ["1", "0"], ids=["loop-mode", "thread-mode"])
def test_full_through_the_app_answers_and_stores(
    make_app: Callable[..., Any], writer_lock: str
) -> None:
    app = make_app(sqlite_synchronous="FULL", sqlite_writer_lock=writer_lock)
    state = app.app.extensions["ninjahook"]
    assert state.db._wal_sync is not None
    wal_sync, lock = state.db._wal_sync, state.db._writer_lock
    assert (lock is not None) is (writer_lock == "1")
    ingest_syncs: list[bool] = []
    real_sync = wal_sync.sync

    def sync() -> None:
        # The metrics counters have transactions of their own (timer threads, and the
        # loop's executor at shutdown); only the group committer's syncs count here:
        # on its writer thread (thread mode) or in the loop's executor (loop mode).
        if any(Path(f.filename).name == "group_commit.py" for f in traceback.extract_stack()):
            ingest_syncs.append(lock is not None and lock.held())
        real_sync()

    wal_sync.sync = sync
    with app.test_client() as client:
        for activity_id in (61, 62, 63):
            payload = condition_activity(activity_id)
            r = client.post(INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS)
            assert r.status_code == 200
            assert r.json() == {"id": activity_id, "duplicate": False}
            assert len(ingest_syncs) == activity_id - 60  # synced before the answer
        r = client.post(INGEST_PATH, content=body(condition_activity(61)), headers=WEBHOOK_HEADERS)
        assert r.json() == {"id": 61, "duplicate": True}
    assert synchronous(state.db) == 1
    assert ingest_syncs == [False] * 4  # one per delivery's transaction, lock released
    with state.db.connect() as conn:
        assert sorted(
            r.id for r in store.list_activities(conn, store.ActivityFilter(), limit=10)
        ) == [
            61,
            62,
            63,
        ]
