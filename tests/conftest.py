"""Fixtures: a fresh database per test on every configured backend, the app, servers.

SQLite always runs. When NINJAHOOK_TEST_DATABASE_URL points at a PostgreSQL
server, every test that uses ``database_url`` also runs there: a throwaway
database is created and migrated once per session, emptied before each test
and dropped at the end.

Only fixtures live here; the helpers they use are in :mod:`tests.support`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.storage.db import Database
from tests.support import (
    API_TOKEN,
    BACKENDS,
    FAST_DELIVERY,
    WEBHOOK_TOKEN,
    LiveServer,
    create_pg_database,
    drop_pg_database,
    migrate_database,
    migrated_empty_database,
)

_ENV_PREFIXES = ("NINJAHOOK_", "NINJAONE_", "GUNICORN_CMD_ARGS")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's or CI's ninjahook settings."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """One migrated PostgreSQL database for the whole session."""
    url = create_pg_database()
    migrate_database(url)
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating each time is slower)."""
    path = tmp_path_factory.mktemp("template") / "ninjahook.sqlite3"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each configured backend."""
    return migrated_empty_database(request, tmp_path, request.param)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """Settings overrides for create_app: test tokens, this test's database."""
    return {
        "instance_path": str(tmp_path / "instance"),
        "database_url": database_url,
        "webhook_tokens": WEBHOOK_TOKEN,
        "api_tokens": API_TOKEN,
        "background_tasks": "0",
        "validate_responses": True,
    }


@pytest.fixture
def make_app(settings: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """Build apps from the factory with test settings plus ``overrides``."""
    from app.web.factory import create_app

    built: list[Any] = []

    def make(**overrides: Any) -> Any:
        app = create_app({**settings, **overrides})
        built.append(app)
        return app

    yield make
    for app in built:
        app.app.extensions["ninjahook"].db.dispose()


@pytest.fixture
def make_state(settings: dict[str, Any], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Build AppStates (no web layer) from a routes file's text, with fast retries and
    test settings plus ``overrides``: for driving the ingest pipeline and delivery
    workers directly."""
    from app.config import load_config
    from app.services import build_state

    built: list[Any] = []

    def make(routes: str, **overrides: Any) -> Any:
        path = tmp_path / f"routes-{len(built)}.yaml"
        path.write_text(routes)
        values = {k: v for k, v in settings.items() if k != "validate_responses"}
        config = load_config(
            {**values, **FAST_DELIVERY, "routes_file": str(path), **overrides}, environ={}
        )
        state = build_state(config, refresh_cache=False)
        built.append(state)
        return state

    yield make
    for state in built:
        state.db.dispose()


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    """The receiver with test settings."""
    return make_app()


@pytest.fixture
def state(app: Any) -> Any:
    """The app's :class:`app.state.AppState`."""
    return app.app.extensions["ninjahook"]


@pytest.fixture
def client(app: Any) -> Iterator[Any]:
    """An in-process client (Starlette TestClient through the full middleware stack)."""
    with app.test_client() as c:
        yield c


@pytest.fixture
def server(app: Any) -> Iterator[LiveServer]:
    """The app served by uvicorn on 127.0.0.1 in a thread."""
    srv = LiveServer(app).start()
    yield srv
    srv.stop()
