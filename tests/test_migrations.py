"""Alembic migrations create exactly the tables app/storage/tables.py describes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.storage.db import Database
from app.storage.tables import metadata
from tests.support import BACKENDS, scratch_database

# SQLite's FTS5 text search (migration 0005) is a virtual table with shadow tables and
# triggers that SQLAlchemy cannot describe, so app/storage/tables.py leaves them out.
SQLITE_FTS_TABLES = {
    "activities_fts",
    "activities_fts_data",
    "activities_fts_idx",
    "activities_fts_docsize",
    "activities_fts_config",
}


# PostgreSQL's pg_trgm indexes for the same search are in tables.py with
# ddl_if(dialect="postgresql"), which Alembic's comparison does not honour.
POSTGRESQL_ONLY_INDEXES = {"ix_activities_message_trgm", "ix_activities_subject_trgm"}


def _text_search_filter(dialect: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """An ``include_object`` hook that leaves out exactly the text-search objects that
    app/storage/tables.py does not (or, on this backend, must not) describe."""

    def include_object(_obj: Any, name: str | None, type_: str, _reflected: bool, _to: Any) -> bool:
        if type_ == "table" and name in SQLITE_FTS_TABLES:
            return False
        return not (
            type_ == "index" and dialect != "postgresql" and name in POSTGRESQL_ONLY_INDEXES
        )

    return include_object


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, unmigrated database of each configured backend."""
    with scratch_database(request.param, tmp_path, "ninjahook_migr") as url:
        yield url


def test_migrations_match_the_table_definitions(empty_database: str) -> None:
    db = Database(empty_database)
    try:
        assert db.current_revision() is None
        db.migrate()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_object": _text_search_filter(conn.dialect.name)}
            )
            diff = compare_metadata(context, metadata)
        assert diff == []
        head = db.current_revision()
        db.migrate()  # idempotent
        assert db.current_revision() == head
    finally:
        db.dispose()


def test_downgrade_to_base_and_up_again(empty_database: str) -> None:
    from alembic import command
    from alembic.config import Config

    from app.storage.db import MIGRATIONS_DIR

    db = Database(empty_database)
    try:
        db.migrate()
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert "activities" not in sa.inspect(db.engine).get_table_names()
        db.migrate()
        assert "activities" in sa.inspect(db.engine).get_table_names()
    finally:
        db.dispose()
