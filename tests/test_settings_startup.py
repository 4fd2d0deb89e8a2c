"""Every setting is checked at start-up: a bad value stops `ninjahook serve`, `ninjahook
migrate` and gunicorn with one line naming the variable, the value and what is allowed,
and a non-zero exit status; never a traceback, and never a server that answers every
delivery with an error (NINJAHOOK_MAX_BODY_BYTES=0 used to start and then 413 them all)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import ConfigError, load_config
from tests.support import ROOT, run_cli

# (variable, value, what the one line must say besides the variable and the value)
BAD = [
    ("NINJAHOOK_MAX_BODY_BYTES", "0", "at least 1024"),
    ("NINJAHOOK_MAX_BODY_BYTES", "lots", "whole number"),
    ("NINJAHOOK_DATABASE_URL", "garbage", "postgresql://"),
    ("NINJAHOOK_DATABASE_URL", "mysql://x", "sqlite:///"),
    ("NINJAHOOK_LOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("NINJAHOOK_BACKFILL_INTERVAL", "sometimes", "15m"),
    ("NINJAHOOK_BACKFILL_INTERVAL", "-5m", "15m"),
    ("NINJAHOOK_BODY_TIMEOUT", "0.01", "at least 1 second"),
    ("NINJAHOOK_DELIVERY_LEASE", "0", "> 0"),
    ("NINJAHOOK_DELIVERY_TIMEOUT", "soon", "seconds"),
    ("NINJAHOOK_PORT", "70000", "1 to 65535"),
    ("NINJAHOOK_RETENTION_DAYS", "-1", "at least 0"),
]
IDS = [f"{env}={value}" for env, value, _ in BAD]


def check_one_line(output: str, *expected: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    for text in expected:
        assert text in lines[0], (text, lines[0])


@pytest.fixture
def unwritable_instance(tmp_path: Path) -> str:
    """A folder that cannot exist (its parent is a file), so it fails even for root."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return str(blocker / "instance")


def test_valid_values_still_load() -> None:
    config = load_config(
        environ={
            "NINJAHOOK_DATABASE_URL": "postgres://u:p@db.example/ninjahook",
            "NINJAHOOK_LOG_LEVEL": "warn",
            "NINJAHOOK_BACKFILL_INTERVAL": "15m",
            "NINJAHOOK_MAX_BODY_BYTES": "1024",
            "NINJAHOOK_BODY_TIMEOUT": "0",
            "NINJAHOOK_RETENTION_DAYS": "0",
        }
    )
    assert (config.log_level, config.backfill_interval, config.max_body_bytes) == (
        "WARNING",
        900,
        1024,
    )
    for url in ("sqlite:///x.db", "postgresql+psycopg://u@h/db", ""):
        assert load_config(environ={"NINJAHOOK_DATABASE_URL": url}).database_url == url


def test_a_database_url_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"NINJAHOOK_DATABASE_URL": "mysql://admin:hunter2@db/x"})
    assert "hunter2" not in str(caught.value)
    assert "NINJAHOOK_DATABASE_URL" in str(caught.value)


@pytest.mark.parametrize(("env", "value", "allowed"), BAD, ids=IDS)
@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_the_cli_refuses_a_bad_setting_with_one_line(
    command: str, env: str, value: str, allowed: str, tmp_path: Path
) -> None:
    result = run_cli(
        [command], env={"NINJAHOOK_INSTANCE_PATH": str(tmp_path / "instance"), env: value}
    )
    assert result.exit_code == 1
    check_one_line(result.output, env, repr(value), allowed)


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_the_cli_refuses_an_unwritable_instance_folder(
    command: str, unwritable_instance: str
) -> None:
    result = run_cli([command], env={"NINJAHOOK_INSTANCE_PATH": unwritable_instance})
    assert result.exit_code == 1
    check_one_line(result.output, "NINJAHOOK_INSTANCE_PATH", unwritable_instance, "write")


def _clean_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NINJAHOOK_", "GUNICORN"))},
        "NINJAHOOK_INSTANCE_PATH": str(tmp_path / "instance"),
        "NINJAHOOK_BIND": "127.0.0.1:1",  # never reached: start-up stops first
        **settings,
    }


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
NINJAHOOK = str(Path(sys.executable).with_name("ninjahook"))


@pytest.mark.parametrize(("env", "value", "allowed"), BAD, ids=IDS)
def test_gunicorn_refuses_a_bad_setting_with_one_line(
    env: str, value: str, allowed: str, tmp_path: Path
) -> None:
    done = _run([GUNICORN, "-c", "gunicorn.conf.py"], _clean_env(tmp_path, **{env: value}))
    assert done.returncode != 0
    check_one_line(done.stdout + done.stderr, env, repr(value), allowed)


@pytest.mark.parametrize(
    ("env", "value"), [("NINJAHOOK_WORKERS", "many"), ("NINJAHOOK_GRACEFUL_TIMEOUT", "-1")]
)
def test_gunicorn_refuses_its_own_bad_settings_with_one_line(
    env: str, value: str, tmp_path: Path
) -> None:
    done = _run([GUNICORN, "-c", "gunicorn.conf.py"], _clean_env(tmp_path, **{env: value}))
    assert done.returncode != 0
    check_one_line(done.stdout + done.stderr, env, repr(value), "whole number")


def test_gunicorn_refuses_an_unwritable_instance_folder(
    tmp_path: Path, unwritable_instance: str
) -> None:
    env = _clean_env(tmp_path, NINJAHOOK_INSTANCE_PATH=unwritable_instance)
    done = _run([GUNICORN, "-c", "gunicorn.conf.py"], env)
    assert done.returncode != 0
    check_one_line(done.stdout + done.stderr, "NINJAHOOK_INSTANCE_PATH", unwritable_instance)


def test_gunicorn_refuses_an_invalid_routes_file(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes: [{name: x, destinations: [nowhere]}]\n")
    done = _run(
        [GUNICORN, "-c", "gunicorn.conf.py"], _clean_env(tmp_path, NINJAHOOK_ROUTES=str(routes))
    )
    assert done.returncode != 0
    check_one_line(done.stdout + done.stderr, "NINJAHOOK_ROUTES")


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize(
    ("env", "value"),
    [("NINJAHOOK_DATABASE_URL", "garbage"), ("NINJAHOOK_LOG_LEVEL", "LOUD")],
)
def test_the_installed_command_exits_with_one_line(
    command: str, env: str, value: str, tmp_path: Path
) -> None:
    done = _run([NINJAHOOK, command], _clean_env(tmp_path, **{env: value}))
    assert done.returncode == 1
    check_one_line(done.stdout + done.stderr, env, repr(value))
