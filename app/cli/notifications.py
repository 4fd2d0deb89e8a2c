"""Commands for routed delivery: ``routes check|test``, ``worker`` and ``deliveries …``."""

from __future__ import annotations

import json
import signal
from typing import Any

import click

from app.cli.context import AppContext, database_errors, fail, pass_ctx
from app.timeparse import parse_instant


def _since(value: str | None) -> float | None:
    """Epoch seconds from ISO 8601, epoch seconds, or an age such as 30m, 2h, 1d."""
    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        fail(f"--since: {exc}")
        raise AssertionError from None  # fail() raises


def _routes(app_ctx: AppContext, path: str | None) -> Any:
    from app.notifications.routes import RoutesError, load_routes

    file = path or app_ctx.config.routes_file
    if not file:
        fail("no routes file: set NINJAHOOK_ROUTES or pass --file")
    try:
        return load_routes(file)
    except RoutesError as exc:
        fail(str(exc))


def register(group: click.Group) -> None:
    """Add the ``routes``, ``worker`` and ``deliveries`` commands to ``group``."""
    group.add_command(routes)
    group.add_command(worker)
    group.add_command(deliveries)


@click.group()
def routes() -> None:
    """The routes file (NINJAHOOK_ROUTES): check it, try it on a stored activity."""


@routes.command("check")
@click.option("--file", "path", help="Routes file to check (default: NINJAHOOK_ROUTES).")
@pass_ctx
def routes_check(app_ctx: AppContext, path: str | None) -> None:
    """Validate the routes file; on an error print the file, line and cause and exit 1.

    Secrets named with *_env / *_file must be present, as they are at start-up.
    """
    from rich.console import Console
    from rich.table import Table

    config = _routes(app_ctx, path)
    console = Console()
    table = Table("destination", "kind", "target", "signed")
    for dest in config.destinations.values():
        if dest.kind == "email":
            target = f"smtp {dest.smtp_host}:{dest.smtp_port} → {', '.join(dest.mail_to)}"
        elif dest.url_secret is not None:
            target = f"URL from {dest.url_secret.source}"  # the URL itself is a credential
        else:
            target = str(dest.url)
        signed = f"yes ({dest.signing_secret.source})" if dest.signing_secret else ""
        table.add_row(dest.name, dest.kind, target, signed)
    console.print(table)
    rtable = Table("route", "line", "destinations", "once per alert", "resolved")
    for route in config.routes:
        rtable.add_row(
            route.name,
            str(route.line),
            ", ".join(route.destinations),
            "yes" if route.once_per_alert else "no",
            "yes" if route.send_resolved else "no",
        )
    console.print(rtable)
    click.echo(
        f"{config.path}: OK ({len(config.routes)} routes, {len(config.destinations)} destinations)"
    )


@routes.command("test")
@click.argument("activity_id", type=int)
@click.option("--file", "path", help="Routes file to use (default: NINJAHOOK_ROUTES).")
@pass_ctx
def routes_test(app_ctx: AppContext, activity_id: int, path: str | None) -> None:
    """Show which routes a stored activity matches and render each message. Sends nothing."""
    from app.alerts.service import RESET_CODES, alert_key
    from app.notifications.destinations import (
        Envelope,
        slack_payload,
        teams_payload,
        webhook_payload,
    )
    from app.notifications.matching import describe, matches, template_context
    from app.notifications.templates import markup_for, render
    from app.storage.activities import get_activity_raw

    config = _routes(app_ctx, path)

    def read(conn: Any) -> tuple[bytes | None, Any]:
        raw = get_activity_raw(conn, activity_id)
        if raw is None:
            return None, None
        return raw, describe(conn, json.loads(raw))

    raw, subject = app_ctx.read(read)
    if raw is None:
        fail(f"no activity with id {activity_id} is stored")
    payload = json.loads(raw or b"{}")
    key = alert_key(payload)
    # As ingest decides: only a condition's RESET (it has an alert) resolves.
    event = "resolved" if key is not None and payload.get("statusCode") in RESET_CODES else "notify"
    any_match = False
    for route in config.routes:
        if not matches(route.match, subject):
            click.echo(f"route {route.name}: no match")
            continue
        any_match = True
        click.secho(f"route {route.name}: MATCH ({event})", fg="green")
        context = template_context(
            subject,
            route=route.name,
            event=event,
            alert_key=key,
            delivery_id="<delivery id>",
            refers_to=None,
        )
        try:
            message = render(context, route.title, route.template)
        except Exception as exc:
            fail(f"route {route.name}: template error: {exc}")
        for name in route.destinations:
            dest = config.destinations[name]
            click.echo(f"  → {name} ({dest.kind})")
            shown = message
            if markup_for(dest.kind) != "plain":
                shown = render(context, route.title, route.template, markup_for(dest.kind))
            if dest.kind == "slack":
                shaped: Any = slack_payload(shown)
            elif dest.kind == "teams":
                shaped = teams_payload(shown)
            elif dest.kind == "webhook":
                shaped = webhook_payload(shown, Envelope("<delivery id>"), route.name)
            else:
                shaped = {"title": shown.title, "body": shown.text}
            for line in json.dumps(shaped, indent=2, ensure_ascii=False).splitlines():
                click.echo(f"    {line}")
    if not any_match:
        click.echo("no route matches this activity")


@click.command()
@click.option("--drain", is_flag=True, help="Deliver everything due, then exit.")
@pass_ctx
def worker(app_ctx: AppContext, drain: bool) -> None:
    """Deliver routed activities until stopped (SIGTERM/SIGINT finish the current sends).

    Run as many as you like beside PostgreSQL: they share the outbox with row locks.
    Retry timing comes from NINJAHOOK_DELIVERY_* (see `ninjahook settings`).
    """
    from app.logs import configure_logging
    from app.notifications.outbox import Worker, routes_of
    from app.tracing import configure as configure_tracing

    configure_logging(app_ctx.config.log_level, app_ctx.config.log_format)
    configure_tracing()  # the sends' client spans, when OTEL_* asks (app.tracing)
    if not app_ctx.config.routes_file:
        fail("no routes: set NINJAHOOK_ROUTES to a routes file")
    state = app_ctx.state()
    routes_config = routes_of(state)
    if not routes_config.routes:
        fail("no routes: set NINJAHOOK_ROUTES to a routes file")
    runner = Worker(state, routes_config)

    def _stop(signum: int, _frame: Any) -> None:
        click.echo(f"received signal {signum}: finishing deliveries in flight", err=True)
        runner.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    click.echo(
        f"delivery worker {runner.holder}: {len(routes_config.routes)} routes, "
        f"{runner.concurrency} at a time",
        err=True,
    )
    try:
        runner.run(drain=drain)
    finally:
        runner.close()
        state.db.dispose()
    click.echo(
        f"worker stopped: {runner.sent} delivered, {runner.failed} failed attempts", err=True
    )


@click.group()
def deliveries() -> None:
    """The delivery outbox: list, retry dead letters, replay after an outage."""


_SINCE_HELP = "Only deliveries enqueued since then: an age (30m, 2h, 1d), ISO 8601 or epoch."


@deliveries.command("list")
@click.option("--since", help=_SINCE_HELP)
@click.option("--route", help="Only this route.")
@click.option(
    "--status",
    type=click.Choice(["pending", "delivering", "delivered", "dead"]),
    help="Only this status (dead: the dead letters).",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@pass_ctx
def deliveries_list(
    app_ctx: AppContext, since: str | None, route: str | None, status: str | None, limit: int
) -> None:
    """Show deliveries, newest first."""
    from rich.console import Console
    from rich.table import Table

    from app.storage.notifications import NotificationFilter, list_notifications
    from app.timeparse import iso

    flt = NotificationFilter(
        since=_since(since), route=route, statuses=(status,) if status else None
    )
    rows = app_ctx.read(lambda conn: list_notifications(conn, flt, limit=limit))
    console = Console()
    if not rows:
        console.print("no deliveries")
        return
    table = Table(
        "id",
        "created",
        "activity",
        "route",
        "destination",
        "event",
        "status",
        "tries",
        "last error",
    )
    for r in rows:
        table.add_row(
            r.uid,
            iso(r.created_at),
            str(r.activity_id),
            r.route,
            r.destination,
            r.event,
            r.status,
            str(r.attempts),
            (r.last_error or "")[:60],
        )
    console.print(table)


def _requeue(app_ctx: AppContext, flt: Any, what: str, *, dead_only: bool = False) -> None:
    from app.notifications.reads import requeue_notifications, retry_dead_letters

    with database_errors(app_ctx.database_url(), "update"):
        db = app_ctx.database()
        try:
            # The dashboard's "retry" calls retry_dead_letters too.
            count = (retry_dead_letters if dead_only else requeue_notifications)(db, flt)
        finally:
            db.dispose()
    click.echo(f"{count} {what} queued again; a running worker sends them now")


@deliveries.command("retry")
@click.option("--since", help=_SINCE_HELP)
@click.option("--route", help="Only this route.")
@click.option("--destination", help="Only this destination.")
@pass_ctx
def deliveries_retry(
    app_ctx: AppContext, since: str | None, route: str | None, destination: str | None
) -> None:
    """Send the dead letters again (same delivery ids), with a fresh attempt budget."""
    from app.storage.notifications import DEAD, NotificationFilter

    flt = NotificationFilter(
        since=_since(since), route=route, destination=destination, statuses=(DEAD,)
    )
    _requeue(app_ctx, flt, "dead letters", dead_only=True)


@deliveries.command("replay")
@click.option("--since", required=True, help=_SINCE_HELP)
@click.option("--route", help="Only this route.")
@click.option("--destination", help="Only this destination.")
@pass_ctx
def deliveries_replay(
    app_ctx: AppContext, since: str, route: str | None, destination: str | None
) -> None:
    """Send again everything finished since a time (delivered and dead), e.g. after a
    destination lost data. Each keeps its delivery id, so a destination that already
    has it can recognise the repeat."""
    from app.storage.notifications import NotificationFilter

    flt = NotificationFilter(since=_since(since), route=route, destination=destination)
    _requeue(app_ctx, flt, "deliveries")
