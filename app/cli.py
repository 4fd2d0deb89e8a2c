"""The ``ninjahook`` command line. Options read the same environment variables as the server."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from app.config import SETTINGS, Config, ConfigError, load_config

T = TypeVar("T")

# Modules that add commands: each has ``register(group: click.Group) -> None``.
COMMAND_MODULES: tuple[str, ...] = ("app.cli_ninjaone", "app.cli_alerts", "app.cli_delivery")


class AppContext:
    """What commands share: settings (lazily) and the console."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self.overrides = overrides
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.overrides)
            except ConfigError as exc:
                raise click.ClickException(f"configuration: {exc}") from None
        return self._config

    def database(self) -> Any:
        from app.db import Database, normalize_url

        cfg = self.config
        return Database(
            normalize_url(cfg.database_url, cfg.instance),
            sqlite_synchronous=cfg.sqlite_synchronous,
        )

    def read(self, query: Callable[[Any], T]) -> T:
        """Run ``query(connection)`` on the configured database, failing with one line
        (no traceback) when the database cannot be read."""
        db = self.database()
        try:
            with db.connect() as conn:
                return query(conn)
        except Exception as exc:
            fail(f"cannot read the database: {exc.__class__.__name__}")
            raise AssertionError("unreachable") from None
        finally:
            db.dispose()

    def state(self) -> Any:
        """An :class:`app.state.AppState` with extensions installed, for commands that ingest."""
        from app.factory import build_state, install_extensions

        try:
            state = build_state(self.config)
            install_extensions(state)
        except ConfigError as exc:
            raise click.ClickException(f"configuration: {exc}") from None
        return state


pass_ctx = click.make_pass_decorator(AppContext)


def fail(message: str) -> None:
    """Stop with a one-line error and exit status 1 (no traceback)."""
    raise click.ClickException(message)


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


@main.command()
@pass_ctx
def migrate(app_ctx: AppContext) -> None:
    """Apply the database migrations (idempotent)."""
    run_migrations(app_ctx)


def run_migrations(app_ctx: AppContext) -> None:
    """Migrate the configured database to the newest revision, or fail with one line."""
    from app.db import redact_url

    db = app_ctx.database()
    try:
        db.migrate()
        click.echo(f"database {redact_url(db.url)} is at revision {db.current_revision()}")
    except Exception as exc:
        fail(
            f"cannot migrate {redact_url(db.url)}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:200]}"
        )
    finally:
        db.dispose()


def ensure_tokens(config: Config) -> None:
    """Generate the webhook and read tokens into the instance folder when none are
    configured, and print each one once, when it is created."""
    from app.auth import load_or_create_token

    for kind, configured, env in (
        ("webhook", config.webhook_tokens, "NINJAHOOK_WEBHOOK_TOKENS"),
        ("api", config.api_tokens, "NINJAHOOK_API_TOKENS"),
    ):
        if configured:
            continue
        token, created = load_or_create_token(config.instance, kind)
        path = config.instance / f"{kind}-token"
        if created:
            label = "a webhook" if kind == "webhook" else "an API (read)"
            click.secho(
                f"Generated {label} token (shown once; kept in {path}):", fg="yellow", err=True
            )
            click.echo(f"  {token}", err=True)
            click.echo(f"  Set {env} to use your own.", err=True)
        else:
            click.echo(f"Using the {kind} token in {path}.", err=True)


@main.command()
@click.option(
    "--host",
    envvar="NINJAHOOK_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="NINJAHOOK_PORT",
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

    from app.factory import create_app, settle_heap
    from app.logs import configure_logging

    config = app_ctx.config
    configure_logging(config.log_level)
    ensure_tokens(config)
    if not no_migrate:
        run_migrations(app_ctx)
    try:
        app = create_app(app_ctx.overrides)
    except ConfigError as exc:  # e.g. an invalid routes file: file, line and cause
        fail(f"configuration: {exc}")
    settle_heap()
    click.echo(
        f"ninjahook listening on http://{host}:{port} "
        f"(deliveries: POST /webhooks/ninjarmm/activity)",
        err=True,
    )
    uvicorn.run(
        app, host=host, port=port, log_level=config.log_level.lower(), timeout_graceful_shutdown=30
    )


@main.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def settings_cmd(as_json: bool) -> None:
    """List every setting: environment variable, default and meaning."""
    rows = [
        {
            "env": s.env,
            "default": s.default if not isinstance(s.default, tuple) else ",".join(s.default),
            "help": s.help,
        }
        for s in SETTINGS
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("variable", "default", "meaning")
    for row in rows:
        table.add_row(row["env"], str(row["default"]), row["help"])
    Console().print(table)


@main.group()
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
@pass_ctx
def rejected_list(app_ctx: AppContext, limit: int, show_body: bool) -> None:
    """Show the newest rejected deliveries."""
    from rich.console import Console
    from rich.table import Table

    from app.storage.activities import list_rejected
    from app.web import iso

    rows = app_ctx.read(lambda conn: list_rejected(conn, limit=limit))
    console = Console()
    if not rows:
        console.print("no rejected deliveries")
        return
    if show_body:
        # Full records, one block each: a table would wrap bodies and reasons.
        for r in rows:
            click.echo(
                f"#{r.id}  {iso(r.received_at)}  {r.body_bytes} bytes"
                f"{' (truncated)' if r.truncated else ''}  {r.content_type or ''}"
            )
            click.echo(f"  reason: {r.reason}")
            click.echo("  body:   " + bytes(r.body).decode("utf-8", "replace"))
            click.echo()
        return
    table = Table("id", "received", "reason", "bytes", "body")
    for r in rows:
        text = bytes(r.body).decode("utf-8", "replace")
        table.add_row(
            str(r.id),
            iso(r.received_at),
            r.reason,
            str(r.body_bytes),
            text[:60] + ("…" if len(text) > 60 else ""),
        )
    console.print(table)


def _register_command_modules() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(main)


_register_command_modules()


if __name__ == "__main__":
    sys.exit(main())
