"""The ``ninjahook`` command line. Options read the same environment variables as the server."""

from __future__ import annotations

import sys
from typing import Any

import click

from app.cli import alerts, backup, export, ninjaone, notifications, server, status
from app.cli.context import AppContext


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--instance",
    envvar="NINJAHOOK_INSTANCE_PATH",
    default="instance",
    show_default=True,
    help="Instance folder (SQLite file, generated tokens).",
)
@click.option(
    "--database-url",
    envvar="NINJAHOOK_DATABASE_URL",
    default="",
    help="SQLAlchemy URL; default SQLite in the instance folder. [env NINJAHOOK_DATABASE_URL]",
)
@click.version_option(package_name="ninjahook")
@click.pass_context
def main(ctx: click.Context, instance: str, database_url: str) -> None:
    """ninjahook: a durable, exactly-once receiver for NinjaOne webhook activities.

    Every option also reads its environment variable; `ninjahook settings` lists them all.
    """
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
for _module in (server, ninjaone, alerts, notifications, backup, export, status):
    _module.register(main)


if __name__ == "__main__":
    sys.exit(main())
