"""CLI commands for alerts and retention: ``alerts rebuild`` and ``prune``."""

from __future__ import annotations

from typing import Any

import click

from app.cli.context import AppContext, database_errors, pass_ctx


def register(group: click.Group) -> None:
    """Add ``alerts`` and ``prune`` to ``group``."""
    group.add_command(alerts_group)
    group.add_command(prune)


@click.group("alerts")
def alerts_group() -> None:
    """Alerts derived from CONDITION activities."""


@alerts_group.command("rebuild")
@pass_ctx
def rebuild(app_ctx: AppContext) -> None:
    """Recompute every alert from the stored activities.

    The result is the same as the one ingest built incrementally; use it after a
    restore, or to check that nothing drifted. Runs in one transaction.
    """
    from app.alerts import service as alerts
    from app.storage.alerts import count_condition_activities

    with database_errors(app_ctx.database_url(), "update"):
        db = app_ctx.database()
        try:
            with db.begin() as conn:
                total = count_condition_activities(conn)
                click.echo(f"rebuilding alerts from {total} CONDITION activities…", err=True)

                def progress(read: int) -> None:
                    click.echo(f"  read {read}/{total}", err=True)

                written, linked = alerts.rebuild(conn, progress)
        finally:
            db.dispose()
    click.echo(f"rebuilt {written} alerts from {linked} activities")


@click.command("prune")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=None,
    help="Keep activities of the last DAYS days. [default: NINJAHOOK_RETENTION_DAYS, 90]",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=2000,
    show_default=True,
    help="Rows deleted per transaction (small batches keep locks short).",
)
@pass_ctx
def prune(app_ctx: AppContext, days: int | None, batch_size: int) -> None:
    """Delete activities older than the retention period, in batches.

    The history of open alerts is kept, and rejected deliveries are kept for at
    least 30 days.
    """
    from app.retention import service as retention

    retention_days: int = days if days is not None else app_ctx.config.retention_days
    if retention_days <= 0:
        click.echo("retention is off (NINJAHOOK_RETENTION_DAYS=0): nothing pruned")
        return

    def progress(result: Any) -> None:
        click.echo(
            f"  deleted {result.activities} activities, {result.rejected} rejected deliveries",
            err=True,
        )

    with database_errors(app_ctx.database_url(), "update"):
        db = app_ctx.database()
        try:
            result = retention.prune_database(
                db, retention_days=retention_days, batch_size=batch_size, progress=progress
            )
        finally:
            db.dispose()
    click.echo(
        f"pruned {result.activities} activities older than {retention_days} days, "
        f"{result.rejected} rejected deliveries, {result.deliveries} outbox deliveries and "
        f"{result.route_notices} resolved route alerts; kept the history of open alerts "
        "and every pending delivery"
    )
