"""Backing up and restoring a SQLite database file, while it is in use for the backup.

A backup copies the database with SQLite's online backup API
(:meth:`sqlite3.Connection.backup`), a few pages per step, inside one read transaction
on the source: in WAL mode that transaction pins a snapshot, so the copy is the
database as it was when the backup started, writers are never blocked, and the
backup never restarts however fast they commit (without the pinned snapshot, every
commit by another connection between two steps restarts the backup from page 1).
The copy is written beside its destination under a temporary name, set to
``journal_mode=DELETE`` (one self-contained file), checked with
``PRAGMA integrity_check`` and only then renamed into place.

PostgreSQL has its own tools (pg_dump / pg_restore): see :func:`pg_commands`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

# (pages copied, total pages) after each step.
Progress = Callable[[int, int], None]

PAGES_PER_STEP = 256

# SQLite's unix VFS: every connection to a WAL database holds a shared lock on this
# byte of the ``-shm`` file (the "dead man switch") for as long as it is open.
_SHM_DMS_OFFSET = 128


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message is one line for the user."""


@dataclass(frozen=True)
class Copy:
    """A checked copy of a database."""

    path: Path
    pages: int
    page_size: int
    rows: dict[str, int]
    seconds: float

    @property
    def size(self) -> int:
        return self.pages * self.page_size


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for PostgreSQL or in-memory SQLite."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def backup(
    source: Path,
    target: Path,
    *,
    force: bool = False,
    pages_per_step: int = PAGES_PER_STEP,
    progress: Progress | None = None,
) -> Copy:
    """Copy the SQLite database ``source`` (live or not) to ``target`` and check the copy.

    :raises BackupError: ``source`` is missing, ``target`` exists (without ``force``) or
        is ``source``, or the copy fails its integrity check.
    """
    if not source.is_file():
        raise BackupError(f"no database at {source} (nothing to back up)")
    if target.exists() or target.is_symlink():
        if target.resolve() == source.resolve():
            raise BackupError(f"{target} is the database itself")
        if not force:
            raise BackupError(f"{target} exists (use --force to overwrite it)")
        if target.is_dir():
            raise BackupError(f"{target} is a directory")
    if not target.parent.is_dir():
        raise BackupError(f"no such directory: {target.parent}")
    started = time.monotonic()
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        _copy(source, partial, pages_per_step=pages_per_step, progress=progress)
        checked = check(partial)
        _fsync(partial)
        os.replace(partial, target)
        _fsync(target.parent)
    finally:
        partial.unlink(missing_ok=True)
    return Copy(target, checked.pages, checked.page_size, checked.rows, time.monotonic() - started)


def check(path: Path) -> Copy:
    """``PRAGMA integrity_check`` on the SQLite file ``path``, then its rows per table.

    :raises BackupError: not a SQLite database, or the check found damage.
    """
    started = time.monotonic()
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {path}: {exc}") from None
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            shown = "; ".join(str(p) for p in problems[:3])
            raise BackupError(f"{path} fails PRAGMA integrity_check: {shown}")
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
            )
        ]
        # Full-text indexes keep their own tables (activities_fts_data, ...): leave
        # those out, and count the virtual table itself.
        virtual = [t for t in tables if _is_virtual(conn, t)]
        tables = [t for t in tables if not any(t.startswith(v + "_") for v in virtual)]
        rows = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    except sqlite3.DatabaseError as exc:  # e.g. "file is not a database"
        raise BackupError(f"{path} is not a usable SQLite database: {exc}") from None
    finally:
        conn.close()
    return Copy(path, pages, page_size, rows, time.monotonic() - started)


def _is_virtual(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    return bool(row and row[0] and row[0].upper().startswith("CREATE VIRTUAL TABLE"))


def in_use(database: Path) -> bool:
    """True while another process has the SQLite database ``database`` open.

    In WAL mode (which ninjahook always sets) SQLite holds a shared lock on one byte
    of ``<database>-shm`` in every process that has a connection open, and takes it
    exclusively only when it is the last one. This asks for that byte exclusively
    without waiting and gives it back at once. It answers for other processes only:
    POSIX locks never conflict within one process, so call it before this process
    opens the database.
    """
    shm = Path(str(database) + "-shm")
    try:
        fd = os.open(shm, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # SQLite removes it when the last connection closes
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_OFFSET)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return True
            raise
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_OFFSET)
        return False
    finally:
        os.close(fd)


def restore(source: Path, target: Path, *, now: datetime | None = None) -> tuple[Copy, Path | None]:
    """Replace the SQLite database ``target`` with the backup ``source``.

    The caller makes sure no server uses ``target`` (see :func:`in_use`). ``source`` is
    copied beside ``target`` and checked first; then ``target``, checkpointed into one
    file, is renamed to ``<target>.<UTC time>.bak`` and the copy takes its place.
    Returns the checked copy and the ``.bak`` path (None when there was no database).

    :raises BackupError: ``source`` is missing or damaged, or is not a ninjahook database.
    """
    if not source.is_file():
        raise BackupError(f"no backup at {source}")
    if target.exists() and source.resolve() == target.resolve():
        raise BackupError(f"{source} is the database itself")
    source_check = check(source)
    if "alembic_version" not in source_check.rows:
        raise BackupError(f"{source} is not a ninjahook database (no alembic_version table)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.restoring")
    try:
        _copy(source, partial, pages_per_step=-1, progress=None)
        checked = check(partial)
        _fsync(partial)
        bak: Path | None = None
        if target.exists():
            _checkpoint(target)
            stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
            bak = target.with_name(f"{target.name}.{stamp}.bak")
            n = 1
            while bak.exists():
                bak = target.with_name(f"{target.name}.{stamp}-{n}.bak")
                n += 1
            os.replace(target, bak)
        for suffix in ("-wal", "-shm"):  # empty after the checkpoint; stale otherwise
            Path(str(target) + suffix).unlink(missing_ok=True)
        os.replace(partial, target)
        _fsync(target.parent)
    finally:
        partial.unlink(missing_ok=True)
    return Copy(target, checked.pages, checked.page_size, checked.rows, checked.seconds), bak


def _copy(source: Path, target: Path, *, pages_per_step: int, progress: Progress | None) -> None:
    """Online backup of ``source`` into a new file ``target``, in one read snapshot."""
    target.unlink(missing_ok=True)
    src = sqlite3.connect(source, isolation_level=None, timeout=30)
    try:
        # The read transaction pins the snapshot for every step (see the module doc).
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        dst = sqlite3.connect(target, isolation_level=None)
        try:

            def step(_status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress(total - remaining, total)

            src.backup(dst, pages=pages_per_step, progress=step)
            # The header says WAL, as the source's does: make the copy one file.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
        src.execute("COMMIT")
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {source}: {exc}") from None
    finally:
        src.close()


def _checkpoint(database: Path) -> None:
    """Move every commit in the WAL into ``database`` and empty the WAL."""
    try:
        conn = sqlite3.connect(database, isolation_level=None, timeout=30)
        try:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot checkpoint {database}: {exc}") from None
    wal = Path(str(database) + "-wal")
    if busy or (wal.exists() and wal.stat().st_size > 0):
        raise BackupError(f"cannot checkpoint {database}: it is in use")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pg_commands(url: str, path: str, *, restore: bool) -> list[str]:
    """The pg_dump (or pg_restore) command lines for the PostgreSQL ``url``.

    The password is left out of the URL: pg_dump reads it from PGPASSWORD or ~/.pgpass.
    """
    import shlex

    parsed = sa.engine.make_url(url)
    without_password = sa.engine.URL.create(
        "postgresql",
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=parsed.query,
    )
    target = shlex.quote(without_password.render_as_string(hide_password=False))
    quoted = shlex.quote(path)
    if not restore:
        return [f"pg_dump --format=custom --file={quoted} {target}"]
    return [
        "pg_restore --clean --if-exists --no-owner --single-transaction"
        f" --dbname={target} {quoted}",
        "ninjahook migrate",
    ]
