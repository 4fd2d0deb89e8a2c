"""Test databases: the configured backends, throwaway PostgreSQL databases, migrated copies,
and the SQL a block of code runs.

SQLite always runs. When NINJAHOOK_TEST_DATABASE_URL points at a PostgreSQL server
(an administrative URL: databases are created and dropped through it), PostgreSQL
runs too.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from app.storage.db import Database, normalize_url
from app.storage.tables import metadata

if TYPE_CHECKING:
    import pytest

PG_ADMIN_URL = os.environ.get("NINJAHOOK_TEST_DATABASE_URL", "")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_ADMIN_URL else [])


def _pg_url(dbname: str) -> str:
    return normalize_url(
        sa.engine.make_url(PG_ADMIN_URL).set(database=dbname).render_as_string(False),
        Path("."),
    )


def create_pg_database(prefix: str = "ninjahook_test") -> str:
    """Create an empty PostgreSQL database; returns its psycopg URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_url(PG_ADMIN_URL, Path(".")), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return _pg_url(name)


def drop_pg_database(url: str) -> None:
    """Drop a database made by :func:`create_pg_database`, closing its sessions."""
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(normalize_url(PG_ADMIN_URL, Path(".")), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def scratch_database(backend: str, directory: Path, prefix: str) -> Iterator[str]:
    """An empty, unmigrated database of ``backend`` for the block: the SQLite file
    ``directory/<prefix>.sqlite3``, or a new PostgreSQL database named after ``prefix``
    that is dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'{prefix}.sqlite3'}"
        return
    url = create_pg_database(prefix)
    try:
        yield url
    finally:
        drop_pg_database(url)


def migrate_database(url: str) -> None:
    """Apply every migration to ``url`` (nothing to do when it is up to date)."""
    db = Database(url)
    try:
        db.migrate()
    finally:
        db.dispose()


def empty_all_tables(url: str) -> None:
    """Delete every row in every table (PostgreSQL: one TRUNCATE)."""
    engine = sa.create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


def migrated_empty_database(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> str:
    """A migrated, empty database: a copy of the SQLite template in ``tmp_path``, or the
    session's PostgreSQL database emptied (conftest's ``sqlite_template`` and
    ``pg_session_url`` fixtures)."""
    if backend == "sqlite":
        target = tmp_path / "instance" / "ninjahook.sqlite3"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_session_url")
    empty_all_tables(url)
    return url


@contextmanager
def recorded_statements(engine: Any) -> Iterator[list[str]]:
    """The SQL text of every statement ``engine``'s connections run inside the block,
    including the prepared ones (app.storage.prepared), which bypass SQLAlchemy's events."""
    from sqlalchemy import event

    from app.storage import prepared

    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])  # (conn, cursor, statement, parameters, context, many)

    event.listen(engine, "before_cursor_execute", record)
    prepared.statement_observers.append(statements.append)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
        prepared.statement_observers.remove(statements.append)
