"""The database lifecycle: one module creates engines, applies migrations and probes health.

Everything else receives a :class:`Database` and asks it for connections; SQL
itself lives in :mod:`app.storage`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


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
    """

    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL") -> None:
        self.url = url
        self.sqlite_synchronous = sqlite_synchronous
        self.engine: Engine = self._create_engine()

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
            synchronous = self.sqlite_synchronous

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
        """A connection inside a transaction that commits on success."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reads."""
        with self.engine.connect() as conn:
            yield conn

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except Exception as exc:
            log.warning("database ping failed: %s", exc.__class__.__name__)
            return False

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
