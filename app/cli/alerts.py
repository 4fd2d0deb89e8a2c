"""CLI commands for alerts and retention: ``alerts rebuild``, ``alerts reset`` and ``prune``."""

from __future__ import annotations

from typing import Any

import click

from app.cli.context import AppContext, database_errors, fail, pass_ctx
from app.cli.output import Progress
from app.cli.silences import author_option


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
            with db.begin() as conn, Progress() as report:
                total = count_condition_activities(conn)

                def progress(read: int) -> None:
                    report("CONDITION activities read", read, total)

                written, linked = alerts.rebuild(conn, progress)
        finally:
            db.dispose()
    click.echo(f"rebuilt {written} alerts from {linked} activities")


@alerts_group.command("reset")
@click.argument("key")
@click.option("--comment", default=None, help="Why (recorded with the action).")
@author_option
@pass_ctx
def reset(app_ctx: AppContext, key: str, comment: str | None, author: str) -> None:
    """Reset an alert's condition in NinjaOne (DELETE /v2/alert/{seriesUid}).

    KEY is the alert's key or its ref. NinjaOne then sends the RESET activity that
    closes the alert here. Needs NINJAONE_CLIENT_ID and NINJAONE_CLIENT_SECRET.
    """
    from app.silences.operator import OperatorActionFailed, reset_alert

    state = app_ctx.state()
    try:
        with database_errors(app_ctx.database_url(), "update"):
            try:
                done = reset_alert(state, key, author, comment)
            except OperatorActionFailed as exc:
                fail(f"alert not reset: {exc.detail}")
                return
    finally:
        state.db.dispose()
    if done is None:
        fail(f"no alert with key {key!r}")
        return
    click.echo(f"reset requested in NinjaOne: {done['detail']}")


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

    with (
        database_errors(app_ctx.database_url(), "update"),
        Progress() as report,
    ):

        def progress(result: Any) -> None:
            report("activities deleted", result.activities)
            report("rejected deliveries deleted", result.rejected)

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
