"""The SQLite writer lock in app/storage/db.py: held by every write transaction, across
processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.storage.db import Database, WriterLock

_TRY_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("busy")
else:
    print("free")
"""


def _other_process_sees(path: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _TRY_LOCK, str(path)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_write_transactions_hold_the_lock_against_other_processes(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'n.sqlite3'}")
    lock_file = tmp_path / "n.sqlite3.writer-lock"
    try:
        with db.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            assert _other_process_sees(lock_file) == "busy"
            # Reentrant: a nested write in the same thread does not deadlock.
            with db.begin() as inner:
                inner.exec_driver_sql("SELECT 1")
            assert _other_process_sees(lock_file) == "busy"
        assert _other_process_sees(lock_file) == "free"
    finally:
        db.dispose()


def test_the_lock_is_released_when_the_transaction_fails(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'n.sqlite3'}")
    try:
        with pytest.raises(sa.exc.OperationalError), db.begin() as conn:
            conn.exec_driver_sql("SELECT * FROM missing_table")
        assert _other_process_sees(tmp_path / "n.sqlite3.writer-lock") == "free"
    finally:
        db.dispose()


def test_the_lock_can_be_turned_off_and_is_never_used_for_postgresql(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'n.sqlite3'}", sqlite_writer_lock=False)
    try:
        with db.begin() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert not (tmp_path / "n.sqlite3.writer-lock").exists()
    finally:
        db.dispose()
    pg = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert pg._writer_lock is None
    pg.dispose()


def test_writer_lock_excludes_threads_of_one_process(tmp_path: Path) -> None:
    import threading

    lock = WriterLock(tmp_path / "w.lock")
    inside = 0
    most = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        for _ in range(50):
            with lock:
                with guard:
                    inside += 1
                    most = max(most, inside)
                # Hold the lock long enough for another thread to try to come in.
                time.sleep(0.001)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1
