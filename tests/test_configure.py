"""`ninjahook configure` / `disable` against the emulator, checked against NinjaOne's schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.ninjaone.emulator import Emulator
from tests.support import WEBHOOK_TOKEN, free_port, load_reference, ninjaone_env, run_cli


@pytest.fixture(scope="module")
def webhook_schema() -> dict[str, Any]:
    """NinjaOne's WebhookConfiguration schema, with nothing extra allowed, so a typo fails."""
    schema: dict[str, Any] = load_reference("ninjaone-api-v2-subset.json")["components"]["schemas"][
        "WebhookConfiguration"
    ]
    strict = json.loads(json.dumps(schema))
    strict["additionalProperties"] = False
    strict["required"] = ["url", "activities", "expand", "headers"]
    strict["properties"]["headers"]["items"]["additionalProperties"] = False
    strict["properties"]["headers"]["items"]["required"] = ["name", "value"]
    return strict


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(history=12) as emu:
        yield emu


@pytest.fixture
def env(emulator: Emulator, settings: dict[str, Any]) -> dict[str, str]:
    return ninjaone_env(emulator, settings)


def test_configure_sends_a_valid_webhook_configuration(
    emulator: Emulator, env: dict[str, str], webhook_schema: dict[str, Any]
) -> None:
    result = run_cli(
        ["configure", "--url", "https://hooks.example.com", "--expand", "device,location"], env
    )
    assert result.exit_code == 0, result.output
    sent = emulator.webhook
    assert sent is not None
    jsonschema.validate(sent, webhook_schema)
    assert sent == {
        "url": "https://hooks.example.com/webhooks/ninjarmm/activity",
        "expand": ["device", "location"],
        "activities": {"CONDITION": ["*"], "SYSTEM": ["*"]},
        "headers": [{"name": "Authorization", "value": f"Bearer {WEBHOOK_TOKEN}"}],
    }
    assert WEBHOOK_TOKEN not in result.output
    # From now on a missed delivery is backfill's job: it starts after NinjaOne's newest id.
    assert f"after id {emulator.activity_ids[-1]}" in result.output


def test_activity_filters_and_an_explicit_path(
    emulator: Emulator, env: dict[str, str], webhook_schema: dict[str, Any]
) -> None:
    result = run_cli(
        [
            "configure",
            "--url",
            "https://hooks.example.com/custom/path?x=1",
            "--activity",
            "condition=triggered,reset",
            "--activity",
            "CONDITION=ACKNOWLEDGED",
            "--activity",
            "SYSTEM",
            "--activity",
            "PATCH_MANAGEMENT=*",
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    assert emulator.webhook is not None
    jsonschema.validate(emulator.webhook, webhook_schema)
    assert emulator.webhook["url"] == "https://hooks.example.com/custom/path?x=1"
    assert emulator.webhook["activities"] == {
        "CONDITION": ["TRIGGERED", "RESET", "ACKNOWLEDGED"],
        "SYSTEM": ["*"],
        "PATCH_MANAGEMENT": ["*"],
    }
    assert "warning" not in result.output


def test_dry_run_prints_the_body_with_the_token_masked(
    emulator: Emulator, env: dict[str, str], webhook_schema: dict[str, Any]
) -> None:
    result = run_cli(["configure", "--url", "https://h.example.com", "--dry-run"], env)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    jsonschema.validate(printed, webhook_schema)
    assert printed["headers"] == [{"name": "Authorization", "value": "Bearer ********"}]
    assert WEBHOOK_TOKEN not in result.output
    assert emulator.webhook is None and emulator.token_requests == 0


def test_generated_instance_token_is_used_without_being_printed(
    emulator: Emulator, env: dict[str, str], tmp_path: Path
) -> None:
    del env["NINJAHOOK_WEBHOOK_TOKENS"]
    result = run_cli(["configure", "--url", "https://h.example.com"], env)
    assert result.exit_code == 0, result.output
    token = (Path(env["NINJAHOOK_INSTANCE_PATH"]) / "webhook-token").read_text().strip()
    assert emulator.webhook is not None
    assert emulator.webhook["headers"][0]["value"] == f"Bearer {token}"
    assert token not in result.output


def test_unknown_activity_type_is_a_warning_not_an_error(
    emulator: Emulator, env: dict[str, str]
) -> None:
    result = run_cli(
        ["configure", "--url", "https://h.example.com", "--activity", "BRAND_NEW_TYPE=*"], env
    )
    assert result.exit_code == 0, result.output
    assert "warning: --activity: BRAND_NEW_TYPE is not a known activity type" in result.stderr
    assert emulator.webhook is not None
    assert emulator.webhook["activities"] == {"BRAND_NEW_TYPE": ["*"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://h.example.com"], "--url: NinjaOne would send the webhook token"),
        (["--url", "not a url"], "--url: expected the receiver's public URL"),
        (["--url", "https://h.example.com", "--expand", "devices"], "--expand: unknown value"),
        (["--url", "https://h.example.com", "--activity", "=X"], "--activity: expected TYPE="),
        (["--url", "https://h.example.com", "--activity", "SYSTEM="], "no status after '='"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(
    emulator: Emulator, env: dict[str, str], args: list[str], message: str
) -> None:
    result = run_cli(["configure", *args], env)
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert emulator.webhook is None


def test_http_is_accepted_with_allow_http(emulator: Emulator, env: dict[str, str]) -> None:
    result = run_cli(["configure", "--url", "http://127.0.0.1:8080", "--allow-http"], env)
    assert result.exit_code == 0, result.output
    assert emulator.webhook is not None
    assert emulator.webhook["url"] == "http://127.0.0.1:8080/webhooks/ninjarmm/activity"


def test_disable_deletes_the_webhook(emulator: Emulator, env: dict[str, str]) -> None:
    assert run_cli(["configure", "--url", "https://h.example.com"], env).exit_code == 0
    assert emulator.webhook is not None
    result = run_cli(["disable"], env)
    assert result.exit_code == 0, result.output
    assert emulator.webhook is None
    assert any(r.startswith("DELETE /api/v2/webhook") for r in emulator.api_requests)


def test_forbidden_is_one_line_about_administrator_rights(settings: dict[str, Any]) -> None:
    with Emulator(webhook_forbidden=True) as emu:
        result = run_cli(
            ["configure", "--url", "https://h.example.com"], ninjaone_env(emu, settings)
        )
    assert result.exit_code == 1
    assert "Error: PUT /v2/webhook: NinjaOne answered 403 Forbidden" in result.stderr
    assert "system administrators" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_wrong_credentials_are_one_line_without_the_secret(
    emulator: Emulator, env: dict[str, str]
) -> None:
    env["NINJAONE_CLIENT_SECRET"] = "definitely-wrong-secret"
    for command in (["configure", "--url", "https://h.example.com"], ["disable"]):
        result = run_cli(command, env)
        assert result.exit_code == 1
        assert "NinjaOne rejected the client credentials" in result.stderr
        assert "definitely-wrong-secret" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_host_is_one_line(tmp_path: Path) -> None:
    env = {
        "NINJAHOOK_INSTANCE_PATH": str(tmp_path),
        "NINJAONE_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "NINJAONE_CLIENT_ID": "id",
        "NINJAONE_CLIENT_SECRET": "secret",
    }
    result = run_cli(["disable"], env)
    assert result.exit_code == 1
    assert "cannot connect" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_settings_name_the_variables(tmp_path: Path) -> None:
    env = {"NINJAHOOK_INSTANCE_PATH": str(tmp_path), "NINJAONE_REGION": "eu"}
    result = run_cli(["disable"], env)
    assert result.exit_code == 1
    assert "set NINJAONE_CLIENT_ID and NINJAONE_CLIENT_SECRET" in result.stderr


def test_unmigrated_database_only_warns_after_the_webhook_is_set(tmp_path: Path) -> None:
    with Emulator() as emu:
        env = {
            "NINJAHOOK_INSTANCE_PATH": str(tmp_path),
            "NINJAHOOK_WEBHOOK_TOKENS": WEBHOOK_TOKEN,
            "NINJAONE_BASE_URL": emu.url,
            "NINJAONE_CLIENT_ID": emu.client_id,
            "NINJAONE_CLIENT_SECRET": emu.client_secret,
        }
        result = run_cli(["configure", "--url", "https://h.example.com"], env)
        assert emu.webhook is not None
    assert result.exit_code == 0, result.output
    assert "warning: could not record where backfill starts" in result.stderr
    assert "ninjahook migrate" in result.stderr
