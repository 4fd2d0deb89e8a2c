"""Recovery is on by default, the start-up line says what runs, and `make serve`
(gunicorn) on a fresh instance prints the tokens it generates, once."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import load_config
from app.ninjaone.emulator import Emulator
from app.ninjaone.schedule import DEFAULT_BACKFILL_INTERVAL, backfill_schedule, sources_line
from app.services import build_state, periodic_tasks
from tests.support import (
    GunicornServer,
    migrate_database,
    ninjaone_env,
    one_route_file,
    run_cli,
)

CREDENTIALS = {
    "ninjaone_base_url": "http://127.0.0.1:9",
    "ninjaone_client_id": "id",
    "ninjaone_client_secret": "secret",
}


@pytest.fixture
def base(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "validate_responses"}


def backfill_tasks(overrides: dict[str, Any]) -> list[float]:
    state = build_state(load_config(overrides))
    try:
        return [t.interval for t in periodic_tasks(state) if t.name == "ninjaone-backfill"]
    finally:
        state.db.dispose()


@pytest.mark.parametrize(
    ("interval", "with_credentials", "expected", "warns"),
    [
        (None, True, [float(DEFAULT_BACKFILL_INTERVAL)], False),  # not set: on, every 15m
        (None, False, [], False),  # not set, no credentials: off, silently
        ("off", True, [], False),
        ("0", True, [], False),
        ("5m", True, [300.0], False),
        ("5m", False, [], True),  # set explicitly without credentials: warned
    ],
)
def test_backfill_is_on_by_default_with_credentials(
    base: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    interval: str | None,
    with_credentials: bool,
    expected: list[float],
    warns: bool,
) -> None:
    overrides = {**base, **(CREDENTIALS if with_credentials else {})}
    if interval is not None:
        overrides["backfill_interval"] = interval
    with caplog.at_level(logging.WARNING, logger="app.services"):
        assert backfill_tasks(overrides) == expected
    warned = [r for r in caplog.records if "NINJAHOOK_BACKFILL_INTERVAL is set" in r.message]
    assert bool(warned) == warns


def test_not_set_and_explicitly_off_are_told_apart() -> None:
    assert load_config(environ={}).backfill_interval is None
    assert load_config(environ={"NINJAHOOK_BACKFILL_INTERVAL": "off"}).backfill_interval == 0
    creds = {
        "NINJAONE_CLIENT_ID": "id",
        "NINJAONE_CLIENT_SECRET": "secret",
        "NINJAONE_REGION": "eu",
    }
    default = backfill_schedule(load_config(environ=creds))
    assert default.interval == 900 and "every 15m (the default" in default.reason
    off = backfill_schedule(load_config(environ={**creds, "NINJAHOOK_BACKFILL_INTERVAL": "off"}))
    assert off.interval == 0 and off.reason == "off (NINJAHOOK_BACKFILL_INTERVAL=off)"
    bare = backfill_schedule(load_config(environ={}))
    assert bare.reason == "off (no NINJAONE_CLIENT_ID/NINJAONE_CLIENT_SECRET)"
    assert not bare.misconfigured


def test_the_start_up_line_names_webhook_backfill_and_sync() -> None:
    creds = {"NINJAONE_CLIENT_ID": "id", "NINJAONE_CLIENT_SECRET": "s", "NINJAONE_REGION": "eu"}
    line = sources_line(load_config(environ={**creds, "NINJAHOOK_SYNC_INTERVAL": "off"}))
    assert line == (
        "ninjahook sources: webhook on; backfill every 15m (the default with NinjaOne "
        "credentials; NINJAHOOK_BACKFILL_INTERVAL=off turns it off); entity sync off"
    )
    line = sources_line(load_config(environ={}))
    assert "webhook on; backfill off (no NINJAONE_CLIENT_ID" in line


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=3, history=3) as emu:
        yield emu


def test_backfill_by_hand_warns_when_routes_are_not_loaded(
    emulator: Emulator, settings: dict[str, Any], tmp_path: Path
) -> None:
    env = ninjaone_env(emulator, settings)
    warning = "recovered activities will notify nobody from this shell"
    result = run_cli(["backfill"], env)
    assert result.exit_code == 0, result.output
    assert warning in result.stderr
    assert "set NINJAHOOK_ROUTES as the server has it" in result.stderr
    routes = one_route_file(tmp_path, "http://127.0.0.1:9/hook")
    result = run_cli(["backfill"], {**env, "NINJAHOOK_ROUTES": str(routes)})
    assert result.exit_code == 0, result.output
    assert warning not in result.stderr


def test_gunicorn_on_a_fresh_instance_prints_the_read_token_once_and_it_logs_in(
    database_url: str, tmp_path: Path
) -> None:
    """`make serve`: migrate, then gunicorn; no token configured anywhere."""
    instance = tmp_path / "fresh-instance"
    migrate_database(database_url)
    env = {
        "NINJAHOOK_DATABASE_URL": database_url,
        "NINJAHOOK_INSTANCE_PATH": str(instance),
        "NINJAHOOK_BACKGROUND_TASKS": "0",
        "NINJAONE_CLIENT_ID": "id",
        "NINJAONE_CLIENT_SECRET": "secret",
        "NINJAONE_BASE_URL": "http://127.0.0.1:9",
    }
    first_log = tmp_path / "first.log"
    server = GunicornServer(env, workers=2, log_path=first_log).start()
    try:
        api_token = (instance / "api-token").read_text().strip()
        webhook_token = (instance / "webhook-token").read_text().strip()
        # Log in to the dashboard with the printed read token, as a browser does.
        with httpx.Client(base_url=server.url) as browser:
            form = browser.get("/")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf is not None
            login = browser.post("/login", data={"token": api_token, "csrf": csrf.group(1)})
            assert login.status_code == 303, login.text
            assert 'id="status"' in browser.get("/").text
    finally:
        assert server.stop() == 0
    text = first_log.read_text()
    assert text.count(api_token) == 1
    assert text.count(webhook_token) == 1
    assert "Generated an API (read) token (shown once" in text
    # The start-up line, once for the whole server (not once per worker).
    assert text.count("ninjahook sources:") == 1
    assert "ninjahook sources: webhook on; backfill every 15m (the default" in text
    assert (instance / "api-token").stat().st_mode & 0o077 == 0

    second_log = tmp_path / "second.log"
    server = GunicornServer(env, workers=2, log_path=second_log).start()
    assert server.stop() == 0
    again = second_log.read_text()
    assert api_token not in again and webhook_token not in again
    assert "Generated" not in again
    assert f"Using the api token in {instance / 'api-token'}." in again
