"""The database lifecycle: one module creates engines, applies migrations and probes health.

Everything else receives a :class:`Database` and asks it for connections; SQL
itself lives in :mod:`app.storage`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.tracing import instrument_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Below this, a SQLite database is reported not ready: its next writes may not fit.
SQLITE_MIN_FREE_BYTES = 1 << 20


def normalize_url(url: str, instance: Path) -> str:
    """Resolve the configured URL: empty means SQLite in ``instance``.

    ``postgresql://`` and ``postgres://`` select psycopg 3.
    """
    if not url:
        return f"sqlite:///{instance / 'ninjahook.sqlite3'}"
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def redact_url(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


class Database:
    """An engine plus the operations on its lifecycle.

    :param url: a normalized SQLAlchemy URL (see :func:`normalize_url`).
    :param sqlite_synchronous: ``NORMAL`` or ``FULL``; applies to SQLite only.
    :param sqlite_writer_lock: serialize write transactions on a SQLite file through
        an exclusive lock on ``<database>.writer-lock``, across threads and processes.
    """

    def __init__(
        self, url: str, *, sqlite_synchronous: str = "NORMAL", sqlite_writer_lock: bool = True
    ) -> None:
        self.url = url
        self.sqlite_synchronous = sqlite_synchronous
        self._wal_sync: WalSync | None = None
        self._nesting = threading.local()
        database = sa.engine.make_url(url).database
        on_file = url.startswith("sqlite") and bool(database) and database != ":memory:"
        if on_file and sqlite_synchronous == "FULL":
            assert database is not None
            self._wal_sync = WalSync(Path(database))
        self.engine: Engine = self._create_engine()
        instrument_engine(self.engine)  # statement spans, when tracing is on (app.tracing)
        self._writer_lock: WriterLock | None = None
        if sqlite_writer_lock and on_file:
            self._writer_lock = WriterLock(Path(str(database) + ".writer-lock"))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _create_engine(self) -> Engine:
        url = sa.engine.make_url(self.url)
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=8,
                max_overflow=16,
            )
            # FULL is kept by fsyncing the WAL after each transaction (WalSync), outside
            # the writer lock; SQLite itself then runs with NORMAL.
            synchronous = "NORMAL" if self._wal_sync is not None else self.sqlite_synchronous

            @sa.event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                # WAL lets readers run beside the one writer; with synchronous=NORMAL a
                # commit survives a killed process, with FULL it also survives power loss.
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={synchronous}")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            return engine
        return sa.create_engine(
            url, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_recycle=1800
        )

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection inside a transaction that commits on success.

        On SQLite with the writer lock, the transaction runs while holding it. With
        ``synchronous=FULL``, the commit is on disk (fsynced) when this returns, or,
        inside :meth:`writing`, when that returns.
        """
        with self.writing(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the SQLite writer lock (when there is one) for several transactions.

        Reentrant within a thread. With ``synchronous=FULL``, the WAL is fsynced when
        the outermost block ends, after the lock is released.
        """
        lock = self._writer_lock
        nesting = self._nesting
        depth = getattr(nesting, "depth", 0)
        nesting.depth = depth + 1
        try:
            if lock is None:
                yield
            else:
                with lock:
                    yield
        finally:
            nesting.depth = depth
        # Not inside another writing() of this thread, nor inside a lock taken with
        # try_acquire (the caller then syncs after releasing it).
        if self._wal_sync is not None and depth == 0 and (lock is None or not lock.held()):
            self.sync_wal()

    @property
    def writer_lock(self) -> WriterLock | None:
        """The SQLite writer lock, or None (PostgreSQL, in-memory SQLite, or switched off)."""
        return self._writer_lock

    @property
    def syncs_wal(self) -> bool:
        """True when commits become durable only with :meth:`sync_wal` (SQLite FULL)."""
        return self._wal_sync is not None

    def sync_wal(self) -> None:
        """Make every commit so far durable (SQLite FULL; nothing to do otherwise).

        :raises sqlalchemy.exc.OperationalError: the fsync failed.
        """
        if self._wal_sync is None:
            return
        try:
            self._wal_sync.sync()
        except OSError as exc:
            # Committed but maybe not on disk: answer as for any database failure
            # (503), so that the sender retries; the retry is then a duplicate.
            raise sa.exc.OperationalError("fsync of the SQLite WAL", None, exc) from exc

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reads."""
        with self.engine.connect() as conn:
            yield conn

    def ping(self) -> bool:
        """True when the database answers a trivial query (and, on SQLite, has room to write)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            log.warning("database ping failed: %s", exc.__class__.__name__)
            return False
        # A full disk fails every SQLite write while reads still work, so SELECT 1
        # alone would report ready while ingest answers 503.
        database = self.engine.url.database
        if self.is_sqlite and database and database != ":memory:":
            free = shutil.disk_usage(Path(database).parent).free
            if free < SQLITE_MIN_FREE_BYTES:
                log.warning("database not ready: %d bytes free for the SQLite file", free)
                return False
        return True

    def migrate(self, revision: str = "head") -> None:
        """Apply the Alembic migrations up to ``revision``."""
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def current_revision(self) -> str | None:
        """The applied Alembic revision, or None for an empty database."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        """Close every pooled connection (after fork, at shutdown)."""
        self.engine.dispose()


class WriterLock:
    """An exclusive lock shared by every thread and process that writes one SQLite file.

    SQLite lets one writer in at a time; a writer that finds the file locked sleeps in
    its busy handler for milliseconds, while the holder needs the lock for about 0.3 ms
    (or one fsync with synchronous=FULL). Queueing on ``flock`` instead wakes the next
    writer as soon as the lock is free. The lock is reentrant within a thread, and the
    kernel releases it when a process dies, so a killed worker never leaves it held.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._owner = 0
        self._fd: int | None = None
        self._pid = 0
        # wait_until_free's own descriptor (one waiting thread per process).
        self._waiter_fd: int | None = None
        self._waiter_pid = 0

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _descriptor(self) -> int:
        # flock belongs to an open file description, which a forked worker shares with
        # its parent and siblings: each process opens its own.
        if self._fd is None or self._pid != os.getpid():
            self._fd = self._open()
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> WriterLock:
        self._acquire(blocking=True)
        return self

    def try_acquire(self) -> bool:
        """Take the lock if no other thread or process holds it; never waits."""
        return self._acquire(blocking=False)

    def _acquire(self, *, blocking: bool) -> bool:
        if not self._thread_lock.acquire(blocking=blocking):
            return False
        try:
            if self._depth == 0:
                operation = fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB
                try:
                    fcntl.flock(self._descriptor(), operation)
                except BlockingIOError:  # only without blocking: someone else holds it
                    self._thread_lock.release()
                    return False
                self._owner = threading.get_ident()
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise
        return True

    def wait_until_free(self) -> None:
        """Block until no one holds the lock, without taking it (a hint for try_acquire).

        Waits on a descriptor of its own, which the kernel treats like another
        process's: it gets the lock only once every other holder, in this process
        too, has released it, and gives it back at once.
        """
        if self._waiter_fd is None or self._waiter_pid != os.getpid():
            self._waiter_fd, self._waiter_pid = self._open(), os.getpid()
        fcntl.flock(self._waiter_fd, fcntl.LOCK_EX)
        fcntl.flock(self._waiter_fd, fcntl.LOCK_UN)

    def release(self) -> None:
        """Release what :meth:`try_acquire` or ``with`` took."""
        self.__exit__()

    def held(self) -> bool:
        """True while the calling thread holds the lock."""
        return self._depth > 0 and self._owner == threading.get_ident()

    def __exit__(self, *_exc: object) -> None:
        try:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


class WalSync:
    """``synchronous=FULL`` with the fsync taken out of SQLite's write lock.

    With FULL, SQLite fsyncs the WAL inside every commit, while it holds the
    database's single write lock, so every other writer of every worker waits for
    that fsync too. Here SQLite runs with NORMAL (a commit appends to the WAL without
    an fsync) and :meth:`sync` fsyncs the WAL after the commit and after the lock is
    released, before the caller is answered. The WAL is append-only, so that fsync
    also covers every commit written before it: concurrent writers share fsyncs
    instead of queueing for them.

    It is the same guarantee for every transaction that returned from
    :meth:`Database.begin`: its frames are on disk. In WAL mode with NORMAL, SQLite
    fsyncs the WAL before each checkpoint, the database file after it, and the WAL
    header whenever the WAL starts over, so a commit that a checkpoint moved out of
    the WAL before our fsync is already in the synced database file. When there is
    no WAL (the last connection checkpointed and removed it) the database file is
    synced instead, and a WAL file that is new since the last sync gets its
    directory entry synced too.

    What differs from SQLite's own FULL: other connections can read a commit
    before its fsync has finished. Deliveries are unaffected (each is answered only
    after the fsync that covers it, redeliveries included: they wait for their own
    transaction's fsync, which comes after the first copy's commit).
    """

    def __init__(self, database: Path) -> None:
        self.database = database
        self.wal = Path(str(database) + "-wal")
        self._known_wal: tuple[int, int, bytes] | None = None

    def sync(self) -> None:
        """Make every commit so far durable; raises OSError when the disk fails."""
        try:
            fd = os.open(self.wal, os.O_RDONLY | os.O_CLOEXEC)
            is_wal = True
        except FileNotFoundError:
            fd = os.open(self.database, os.O_RDONLY | os.O_CLOEXEC)
            is_wal = False
        try:
            os.fsync(fd)
            if not is_wal:
                self._known_wal = None
                return
            # A WAL that SQLite created since the last sync may have the same inode
            # number as a removed one, so its header's salts (new at every creation
            # or restart of the WAL) are part of what identifies it.
            stat = os.fstat(fd)
            identity = (stat.st_dev, stat.st_ino, os.pread(fd, 8, 16))
            if identity != self._known_wal:
                _fsync_directory(self.wal.parent)
                self._known_wal = identity
        finally:
            os.close(fd)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
