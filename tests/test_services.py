"""The wiring in app/services.py: the pipeline's stages and order, the periodic tasks,
and that every setting is typed."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import app.config as config_module
from app.config import SETTINGS, Config, ConfigError, load_config
from app.services import build_state, periodic_tasks
from app.storage.tables import rejected_deliveries
from tests.support import INGEST_PATH, WEBHOOK_HEADERS, one_route_file


def _state(tmp_path: Path, **overrides: Any) -> Any:
    base = {"instance_path": str(tmp_path / "instance"), "webhook_tokens": "w" * 32}
    return build_state(load_config({**base, **overrides}))


def test_the_pipeline_is_built_in_its_documented_order(tmp_path: Path) -> None:
    state = _state(tmp_path)
    # No routes: nothing to put in the outbox, so no notifications stage.
    assert state.pipeline.names() == ["entities", "alerts"]
    routes = one_route_file(tmp_path, "http://127.0.0.1:9/hook")
    routed = _state(tmp_path, routes_file=str(routes))
    assert routed.pipeline.names() == ["entities", "alerts", "notifications"]
    state.db.dispose()
    routed.db.dispose()


def test_an_invalid_routes_file_fails_before_the_database_is_opened(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes: [{name: x, destinations: [nowhere]}]\n")
    with pytest.raises(ConfigError, match="NINJAHOOK_ROUTES"):
        _state(tmp_path, routes_file=str(routes), database_url=f"sqlite:///{tmp_path}/no/db")
    assert not (tmp_path / "no").exists()


def test_periodic_tasks_follow_the_settings(tmp_path: Path) -> None:
    state = _state(tmp_path)
    assert [t.name for t in periodic_tasks(state)] == ["retention.prune"]
    off = _state(tmp_path, retention_days="0")
    assert periodic_tasks(off) == []
    routes = one_route_file(tmp_path, "http://127.0.0.1:9/hook")
    routed = _state(tmp_path, routes_file=str(routes), retention_days="0")
    # SQLite: the server sends notifications itself unless told otherwise.
    assert [t.name for t in periodic_tasks(routed)] == ["delivery-worker"]
    elsewhere = _state(tmp_path, routes_file=str(routes), retention_days="0", delivery_worker="off")
    assert periodic_tasks(elsewhere) == []
    for s in (state, off, routed, elsewhere):
        s.db.dispose()


def test_every_setting_has_a_real_type_and_its_docs() -> None:
    hints = typing.get_type_hints(Config, vars(config_module))
    assert [f.name for f in dataclasses.fields(Config)] == [s.name for s in SETTINGS]
    for setting in SETTINGS:
        assert hints[setting.name] is not Any, setting.name
        assert setting.env.startswith(("NINJAHOOK_", "NINJAONE_")) and setting.help
    config = load_config(
        {},
        environ={
            "NINJAHOOK_PORT": "9000",
            "NINJAHOOK_SQLITE_WRITER_LOCK": "off",
            "NINJAHOOK_BODY_TIMEOUT": "2.5",
            "NINJAHOOK_API_TOKENS": f"{'a' * 16}, {'b' * 16}",
        },
    )
    assert config.port == 9000 and isinstance(config.port, int)
    assert config.sqlite_writer_lock is False
    assert config.body_timeout == 2.5
    assert config.api_tokens == ("a" * 16, "b" * 16)


def test_a_wrong_setting_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="NINJAHOOK_PORT"):
        load_config({}, environ={"NINJAHOOK_PORT": "eighty"})


def test_a_rejected_delivery_that_cannot_be_kept_is_answered_503(
    app: Any, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not kept means not lost only if the sender retries: never a 400 then.
    state = app.app.extensions["ninjahook"]

    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(state.db, "begin", unavailable)
    response = client.post(INGEST_PATH, content=b'{"id": "not a number"}', headers=WEBHOOK_HEADERS)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.headers["Content-Type"] == "application/problem+json"
    monkeypatch.undo()
    with state.db.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(rejected_deliveries)).scalar() == 0
        )


def test_a_read_token_equal_to_the_generated_webhook_token_is_refused(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    first = build_state(load_config({"instance_path": str(instance)}))
    first.db.dispose()
    generated = (instance / "webhook-token").read_text().strip()
    with pytest.raises(ConfigError, match="NINJAHOOK_API_TOKENS") as raised:
        build_state(load_config({"instance_path": str(instance), "api_tokens": generated}))
    assert generated not in str(raised.value)
