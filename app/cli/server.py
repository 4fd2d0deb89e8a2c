"""Core commands: migrate, serve, settings and rejected deliveries."""

from __future__ import annotations

import logging

import click

from app.cli.context import AppContext, database_errors, fail, pass_ctx
from app.cli.output import Column, Output, listing_options, print_listing, print_table
from app.config import SETTINGS, Config, ConfigError


def register(group: click.Group) -> None:
    """Add the core commands to ``group``."""
    for command in (migrate, serve, settings_cmd, rejected):
        group.add_command(command)


@click.command()
@pass_ctx
def migrate(app_ctx: AppContext) -> None:
    """Apply the database migrations (idempotent)."""
    run_migrations(app_ctx)


def run_migrations(app_ctx: AppContext) -> None:
    """Migrate the configured database to the newest revision, or fail with one line."""
    from app.storage.db import redact_url

    if not app_ctx.config.database_url:  # SQLite in the instance folder
        app_ctx.startup_config(routes=False)
    with database_errors(app_ctx.database_url(), "migrate"):
        db = app_ctx.database()
        try:
            db.migrate()
            click.echo(f"database {redact_url(db.url)} is at revision {db.current_revision()}")
        finally:
            db.dispose()


def ensure_tokens(config: Config) -> None:
    """Generate the webhook and read tokens into the instance folder when none are
    configured, and print each one once, when it is created (:func:`app.tokens.ensure_tokens`)."""
    from app.tokens import ensure_tokens as provide_tokens

    for notice in provide_tokens(config):
        first, *rest = notice.lines()
        click.secho(first, fg="yellow" if notice.created else None, err=True)
        for line in rest:
            click.echo(line, err=True)


@click.command()
@click.option(
    "--host",
    envvar="NINJAHOOK_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="NINJAHOOK_PORT",
    show_envvar=True,
    default=8080,
    show_default=True,
    type=int,
    help="Port to listen on.",
)
@click.option("--no-migrate", is_flag=True, help="Do not apply migrations before serving.")
@pass_ctx
def serve(app_ctx: AppContext, host: str, port: int, no_migrate: bool) -> None:
    """Run the receiver in one process (development). Use `make serve` (gunicorn) in production.

    Generates a webhook token and a read token into the instance folder when none
    are configured, and prints them once.
    """
    import uvicorn

    from app.logs import configure_logging
    from app.ninjaone.schedule import sources_line
    from app.web.factory import create_app, settle_heap
    from app.web.server import protocol_with

    config = app_ctx.startup_config()
    configure_logging(config.log_level, config.log_format)
    ensure_tokens(config)
    if not no_migrate:
        run_migrations(app_ctx)
    try:
        app = create_app(app_ctx.overrides)
    except ConfigError as exc:  # e.g. an invalid routes file: file, line and cause
        fail(f"configuration: {exc}")
    settle_heap()
    logging.getLogger("app.services").info("%s", sources_line(config))
    # A log line, so that it has the format of every other (NINJAHOOK_LOG_FORMAT).
    logging.getLogger("app.cli").info(
        "ninjahook listening on http://%s:%s (deliveries: POST /webhooks/ninjarmm/activity)",
        host,
        port,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=config.log_level.lower(),
        # Logging is configure_logging's (one format); the access log is the app's own.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        http=protocol_with(config.header_timeout),
    )


@click.command("settings")
@listing_options()
def settings_cmd(output: Output) -> None:
    """List every setting: environment variable, default and meaning."""
    rows = [
        {
            "env": s.env,
            "default": s.default if not isinstance(s.default, tuple) else ",".join(s.default),
            "help": s.help,
        }
        for s in SETTINGS
    ]
    # None: a setting whose absence means something (see its meaning).
    shown = [
        {**row, "default": "not set" if row["default"] is None else str(row["default"])}
        for row in rows
    ]
    if output != "table":
        print_listing(rows, [], output, empty="")
        return
    print_table(
        shown,
        [
            Column("variable", "env", whole=True),
            Column("default", "default"),
            Column("meaning", "help"),
        ],
    )


@click.group()
def rejected() -> None:
    """Deliveries that failed validation (kept with the reason)."""


@rejected.command("list")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(1, 10000),
    help="How many, newest first.",
)
@click.option("--show-body", is_flag=True, help="Print each body in full.")
@listing_options()
@pass_ctx
def rejected_list(app_ctx: AppContext, limit: int, show_body: bool, output: Output) -> None:
    """Show the newest rejected deliveries.

    --json and --jsonl give each as GET /rejected/{id} does, with the whole stored body.
    """
    from app.activities.reads import rejected_record
    from app.storage.activities import list_rejected

    rows = app_ctx.read(lambda conn: list_rejected(conn, limit=limit))
    records = [rejected_record(row) for row in rows]
    if show_body and output == "table" and records:
        # Full records, one block each: a table would wrap bodies and reasons.
        for r in records:
            click.echo(
                f"#{r['id']}  {r['receivedAt']}  {r['bodyBytes']} bytes"
                f"{' (truncated)' if r['truncated'] else ''}  {r['contentType'] or ''}"
            )
            click.echo(f"  reason: {r['reason']}")
            click.echo("  body:   " + r["body"])
            click.echo()
        return
    if output == "table":
        records = [{**r, "preview": _preview(r["body"])} for r in records]
    print_listing(
        records,
        [
            Column("id", "id", whole=True, justify="right"),
            Column("received", "receivedAt", whole=True),
            Column("reason", "reason"),
            Column("bytes", "bodyBytes", whole=True, justify="right"),
            # A preview: --show-body or --json has it whole.
            Column("body", "preview"),
        ],
        output,
        empty="no rejected deliveries",
    )


def _preview(body: str, chars: int = 60) -> str:
    return body[:chars] + ("…" if len(body) > chars else "")
