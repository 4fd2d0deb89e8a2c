"""The ``ninjahook`` command line. Options read the same environment variables as the server."""

from __future__ import annotations

import sys
from typing import Any

import click

from app.cli import alerts, backup, export, ninjaone, notifications, server, silences, status
from app.cli.context import AppContext, CommandGroup

EPILOG = """\b
Settings: an option shows the environment variable it reads ([env var: …]); every
other setting is an environment variable too (`ninjahook settings` lists them all).
Listings take --json (one JSON document) or --jsonl (one JSON object a line).

\b
Exit status:
  0  success
  1  failure, in one line on stderr: a setting, the database, NinjaOne, a file;
     `status` when a check is red
  2  usage: an unknown option or a bad value; `backup` and `restore` on PostgreSQL
     (they print the pg_dump / pg_restore commands instead)
"""


@click.group(
    cls=CommandGroup,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--instance",
    envvar="NINJAHOOK_INSTANCE_PATH",
    show_envvar=True,
    default="instance",
    show_default=True,
    help="Instance folder (SQLite file, generated tokens).",
)
@click.option(
    "--database-url",
    envvar="NINJAHOOK_DATABASE_URL",
    show_envvar=True,
    default="",
    help="SQLAlchemy URL; default SQLite in the instance folder.",
)
@click.version_option(package_name="ninjahook")
@click.pass_context
def main(ctx: click.Context, instance: str, database_url: str) -> None:
    """ninjahook: a durable, exactly-once receiver for NinjaOne webhook activities."""
    overrides: dict[str, Any] = {"instance_path": instance}
    if database_url:
        overrides["database_url"] = database_url
    ctx.obj = AppContext(overrides)
    _configure_logging()


def _configure_logging() -> None:
    """Every command logs as the server does (NINJAHOOK_LOG_LEVEL, NINJAHOOK_LOG_FORMAT).
    A bad setting is reported by the command that reads it; until then, the defaults."""
    from app.config import ConfigError, load_config
    from app.logs import configure_logging

    try:
        config = load_config()
    except ConfigError:
        configure_logging()
    else:
        configure_logging(config.log_level, config.log_format)


# Every command module, registered here and nowhere else.
for _module in (server, ninjaone, alerts, notifications, silences, backup, export, status):
    _module.register(main)


if __name__ == "__main__":
    sys.exit(main())
