"""The command line: serve, migrate, settings, rejected list, configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from app.cli.main import main
from app.config import SETTINGS, ConfigError, load_config
from tests.support import INGEST_PATH, ROOT, body, free_port, minimal_activity

NINJAHOOK = str(Path(sys.executable).with_name("ninjahook"))


def test_serve_generates_tokens_prints_them_once_and_never_accepts_anonymous(
    tmp_path: Path,
) -> None:
    port = free_port()
    instance = tmp_path / "instance"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")}
    env.update(NINJAHOOK_INSTANCE_PATH=str(instance), NINJAHOOK_PORT=str(port))

    def run_once() -> tuple[str, Any]:
        proc = subprocess.Popen(
            [NINJAHOOK, "serve"],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.STDOUT,
            stdout=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            proc.kill()
            raise AssertionError(proc.communicate()[0])
        webhook_token = (instance / "webhook-token").read_text().strip()
        assert (
            httpx.post(
                url + INGEST_PATH,
                content=body(minimal_activity(1)),
                headers={"Content-Type": "application/json"},
            ).status_code
            == 401
        )
        r = httpx.post(
            url + INGEST_PATH,
            content=body(minimal_activity(1)),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {webhook_token}",
            },
        )
        assert r.status_code == 200
        # The query-string form is logged by the access log: it must be redacted there.
        r = httpx.post(
            f"{url}{INGEST_PATH}?token={webhook_token}",
            content=body(minimal_activity(2)),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 200
        api_token = (instance / "api-token").read_text().strip()
        assert (
            httpx.get(
                url + "/activities/1", headers={"Authorization": f"Bearer {api_token}"}
            ).status_code
            == 200
        )
        proc.terminate()
        err, _ = proc.communicate(timeout=30)
        return err, webhook_token

    err, token = run_once()
    assert err.count(token) == 1  # printed once, at generation; redacted in the access log
    assert "token=[REDACTED]" in err
    assert (instance / "webhook-token").stat().st_mode & 0o077 == 0
    err, token_again = run_once()
    assert token_again == token and token not in err  # reused, not printed again


def test_settings_lists_every_variable() -> None:
    result = CliRunner().invoke(main, ["settings", "--json"])
    assert result.exit_code == 0
    for setting in SETTINGS:
        assert setting.env in result.output


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [s.env for s in SETTINGS if s.env not in readme]
    assert missing == []


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"NINJAHOOK_MAX_BODY_BYTES": "lots"}, "NINJAHOOK_MAX_BODY_BYTES"),
        ({"NINJAHOOK_SQLITE_SYNCHRONOUS": "sometimes"}, "NINJAHOOK_SQLITE_SYNCHRONOUS"),
        ({"NINJAHOOK_WEBHOOK_TOKENS": "short"}, "NINJAHOOK_WEBHOOK_TOKENS"),
        ({"NINJAHOOK_METRICS_PUBLIC": "maybe"}, "NINJAHOOK_METRICS_PUBLIC"),
        ({"NINJAHOOK_DELIVERY_MAX_ATTEMPTS": "0"}, "NINJAHOOK_DELIVERY_MAX_ATTEMPTS"),
        ({"NINJAHOOK_INGEST_MAX_BATCH": "0"}, "NINJAHOOK_INGEST_MAX_BATCH"),
    ],
)
def test_invalid_setting_names_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config(environ=env)


def test_migrate_on_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["--database-url", "postgresql://nobody@127.0.0.1:1/none", "migrate"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot migrate postgresql+psycopg://nobody@127.0.0.1:1")
    assert "Traceback" not in result.output


def test_rejected_list_shows_reason_and_body(client: Any, settings: dict[str, Any]) -> None:
    from tests.support import WEBHOOK_HEADERS

    client.post(INGEST_PATH, content=b'{"id": 1, "deviceId": "x"}', headers=WEBHOOK_HEADERS)
    result = CliRunner().invoke(
        main, ["--database-url", settings["database_url"], "rejected", "list", "--show-body"]
    )
    assert result.exit_code == 0, result.output
    assert "deviceId: must be integer" in result.output
    assert '"deviceId": "x"' in result.output


def test_help_explains_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "migrate", "settings", "rejected"):
        assert command in result.output
