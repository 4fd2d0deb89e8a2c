"""Running the ``ninjahook`` command line in-process."""

from __future__ import annotations

from typing import Any

from click.testing import Result

from tests.support.receiver import API_TOKEN, WEBHOOK_TOKEN


def run_cli(args: list[str], env: dict[str, str] | None = None) -> Result:
    """Invoke the ``ninjahook`` CLI in-process; returns click's Result.

    Unexpected exceptions propagate (an expected failure must end as a one-line
    error with a non-zero exit code, never as a traceback).
    """
    from click.testing import CliRunner

    from app.cli.main import main

    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def ninjaone_env(emulator: Any, settings: dict[str, Any]) -> dict[str, str]:
    """Environment for CLI commands: this test's database and tokens, NinjaOne = ``emulator``."""
    return {
        "NINJAHOOK_INSTANCE_PATH": settings["instance_path"],
        "NINJAHOOK_DATABASE_URL": settings["database_url"],
        "NINJAHOOK_WEBHOOK_TOKENS": WEBHOOK_TOKEN,
        "NINJAHOOK_API_TOKENS": API_TOKEN,
        "NINJAONE_BASE_URL": emulator.url,
        "NINJAONE_CLIENT_ID": emulator.client_id,
        "NINJAONE_CLIENT_SECRET": emulator.client_secret,
    }
