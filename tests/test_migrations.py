"""Alembic migrations create exactly the tables app/storage/tables.py describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.db import Database
from app.storage.tables import metadata
from tests.conftest import BACKENDS, create_pg_database, drop_pg_database


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    url = create_pg_database("ninjahook_migr")
    yield url
    drop_pg_database(url)


def test_migrations_match_the_table_definitions(empty_database: str) -> None:
    db = Database(empty_database)
    try:
        assert db.current_revision() is None
        db.migrate()
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
        head = db.current_revision()
        db.migrate()  # idempotent
        assert db.current_revision() == head
    finally:
        db.dispose()


def test_downgrade_to_base_and_up_again(empty_database: str) -> None:
    from alembic import command
    from alembic.config import Config

    from app.db import MIGRATIONS_DIR

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
