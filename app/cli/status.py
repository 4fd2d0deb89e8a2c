"""``ninjahook status``: is this thing working? One line per check, green, amber or red."""

from __future__ import annotations

import json

import click

from app.cli.context import AppContext, database_errors, pass_ctx
from app.cli.ninjaone import NINJAONE_HELP
from app.cli.output import stdout_is_terminal

COLORS = {"green": "green", "amber": "yellow", "red": "red"}


def register(group: click.Group) -> None:
    """Add ``status`` to ``group``."""
    group.add_command(status)


@click.command(epilog=NINJAONE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /status answers).")
@click.option(
    "--no-probe",
    is_flag=True,
    help="Do not ask NinjaOne whether it accepts the credentials.",
)
@pass_ctx
def status(app_ctx: AppContext, as_json: bool, no_probe: bool) -> None:
    """Say whether deliveries, backfill, the entity cache, notifications and the disk
    are working, each line green, amber or red with its reason.

    Exit status: 0 when every line is green or amber, 1 when any line is red (and, as
    for every command, 1 when the settings or the database cannot be read).
    """
    from app.status.service import report as status_report

    # Fails in one line when the database cannot be read (a missing SQLite file included).
    app_ctx.read(lambda _conn: None)
    db = app_ctx.database()
    try:
        with database_errors(app_ctx.database_url(), "read"):
            report = status_report(app_ctx.config, db, probe_api=not no_probe)
    finally:
        db.dispose()
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    elif not stdout_is_terminal():
        # Piped or logged: one line per check, never wrapped.
        for check in report.checks:
            click.echo(f"{check.level:<5}  {check.name}: {check.summary}")
        click.echo(f"overall: {report.level}")
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table("", "check", "state")
        for check in report.checks:
            # Text, not markup: a summary may hold brackets ("[Errno 28]").
            level = Text(check.level, style=COLORS[check.level])
            table.add_row(level, Text(check.name), Text(check.summary))
        console = Console()
        console.print(table)
        console.print(f"overall: [{COLORS[report.level]}]{report.level}[/]")
    if not report.ok:
        raise SystemExit(1)
