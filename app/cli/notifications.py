"""Commands for routed delivery: ``routes check|test``, ``worker`` and ``deliveries …``."""

from __future__ import annotations

import json
import signal
from typing import Any

import click

from app.cli.context import AppContext, database_errors, fail, pass_ctx
from app.cli.output import Column, Output, listing_options, print_json, print_listing, print_table
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


def _routes(app_ctx: AppContext, path: str | None, *, secrets: bool = True) -> Any:
    from app.notifications.routes import RoutesError, load_routes

    file = path or app_ctx.config.routes_file
    if not file:
        fail("no routes file: set NINJAHOOK_ROUTES or pass --file")
    try:
        return load_routes(file, secrets=secrets)
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
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 on a warning too (a match value that webhook.yaml's enums do not list).",
)
@listing_options(jsonl=False)
@pass_ctx
def routes_check(app_ctx: AppContext, path: str | None, strict: bool, output: Output) -> None:
    """Validate the routes file; on an error print the file, line and cause and exit 1.

    Secrets named with *_env / *_file must be present, as they are at start-up. A match
    value that webhook.yaml's enums (activityType, statusCode, nodeClass) do not list is
    a warning, most likely a typo that keeps the route from ever firing; --strict makes
    warnings fail.
    """
    config = _routes(app_ctx, path)
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    destinations = []
    for dest in config.destinations.values():
        if dest.kind == "email":
            target = f"smtp {dest.smtp_host}:{dest.smtp_port} → {', '.join(dest.mail_to)}"
        elif dest.url_secret is not None:
            target = f"URL from {dest.url_secret.source}"  # the URL itself is a credential
        else:
            target = str(dest.url)
        destinations.append(
            {
                "name": dest.name,
                "kind": dest.kind,
                "target": target,
                "signedWith": dest.signing_secret.source if dest.signing_secret else None,
            }
        )
    routes_found = [
        {
            "name": route.name,
            "line": route.line,
            "destinations": list(route.destinations),
            "oncePerAlert": route.once_per_alert,
            "sendResolved": route.send_resolved,
        }
        for route in config.routes
    ]
    if output != "table":
        document = {
            "file": str(config.path),
            "destinations": destinations,
            "routes": routes_found,
            "warnings": list(config.warnings),
        }
        print_json(document)
        if strict and config.warnings:
            fail(f"{config.path}: {len(config.warnings)} warnings (--strict)")
        return
    print_table(
        [
            {**d, "signed": f"yes ({d['signedWith']})" if d["signedWith"] else ""}
            for d in destinations
        ],
        [
            Column("destination", "name", whole=True),
            Column("kind", "kind", whole=True),
            Column("target", "target"),
            Column("signed", "signed"),
        ],
    )
    print_table(
        [{**r, "destinations": ", ".join(r["destinations"])} for r in routes_found],
        [
            Column("route", "name", whole=True),
            Column("line", "line", whole=True, justify="right"),
            Column("destinations", "destinations"),
            Column("once per alert", "oncePerAlert", whole=True),
            Column("resolved", "sendResolved", whole=True),
        ],
    )
    if strict and config.warnings:
        fail(f"{config.path}: {len(config.warnings)} warnings (--strict)")
    warned = f", {len(config.warnings)} warnings" if config.warnings else ""
    click.echo(
        f"{config.path}: OK ({len(config.routes)} routes, "
        f"{len(config.destinations)} destinations{warned})"
    )


@routes.command("test")
@click.argument("activity_id", type=int)
@click.option("--file", "path", help="Routes file to use (default: NINJAHOOK_ROUTES).")
@pass_ctx
def routes_test(app_ctx: AppContext, activity_id: int, path: str | None) -> None:
    """Show what each route does with a stored activity now and render each message.

    Sends nothing, so it needs no secrets: destinations are named, not opened. Judged
    from the stored state as the server judges it now: once_per_alert (a repeat
    TRIGGERED stays quiet), resolved, max_lateness, silences and maintenance windows in
    force, flapping, wait, grouping and reminders; the activity's deliveries so far are
    listed.
    """
    from app.alerts.service import alert_key
    from app.notifications.destinations import (
        Envelope,
        slack_payload,
        teams_payload,
        webhook_payload,
    )
    from app.notifications.links import message_links
    from app.notifications.matching import describe, template_context
    from app.notifications.outbox import preview_routes
    from app.notifications.templates import markup_for, render
    from app.silences.service import Suppressor
    from app.storage.activities import get_activity
    from app.storage.notifications import NotificationFilter, list_notifications

    config = _routes(app_ctx, path, secrets=False)

    def read(conn: Any) -> tuple[Any, Any, Any, Any]:
        row = get_activity(conn, activity_id)
        if row is None:
            return None, None, None, None
        payload = json.loads(row.raw)
        previews = preview_routes(
            conn,
            config,
            payload,
            activity_id,
            row.received_at,
            suppress=Suppressor(at_ingest=False),
        )
        sent = list_notifications(conn, NotificationFilter(activity_id=activity_id), limit=1000)
        return payload, describe(conn, payload), previews, sent

    payload, subject, previews, sent = app_ctx.read(read)
    if payload is None:
        fail(f"no activity with id {activity_id} is stored")
    key = alert_key(payload)
    links = message_links(
        app_ctx.config, alert_key=key, activity_id=activity_id, device_id=subject.device.get("id")
    )
    any_match = False
    for preview in previews:
        route = preview.route
        if not preview.matched:
            click.echo(f"route {route.name}: no match")
            continue
        any_match = True
        if preview.event is None:
            click.secho(f"route {route.name}: MATCH, nothing sent: {preview.reason}", fg="yellow")
        else:
            click.secho(f"route {route.name}: MATCH ({preview.event})", fg="green")
            for note in preview.notes:
                click.echo(f"  {note}")
        for row in sent:
            if row.route == route.name:
                why = f": {row.last_error}" if row.last_error else ""
                click.echo(
                    f"  delivery {row.uid} → {row.destination} ({row.event}): {row.status}{why}"
                )
        if preview.event is None:
            continue
        context = template_context(
            subject,
            route=route.name,
            event=preview.event,
            alert_key=key,
            delivery_id="<delivery id>",
            refers_to=None,
            links=links,
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
            elif dest.vendor is not None:
                from app.notifications.vendors import preview as vendor_preview

                shaped = vendor_preview(dest, shown)
            else:
                shaped = {"title": shown.title, "body": shown.text, "links": dict(shown.links)}
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
        f"worker stopped: {runner.sent} delivered, {runner.skipped} skipped, "
        f"{runner.failed} failed attempts",
        err=True,
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
    type=click.Choice(["pending", "delivering", "delivered", "dead", "skipped", "suppressed"]),
    help="Only this status (dead: the dead letters; skipped: not sent, by the lifecycle rules).",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@listing_options()
@pass_ctx
def deliveries_list(
    app_ctx: AppContext,
    since: str | None,
    route: str | None,
    status: str | None,
    limit: int,
    output: Output,
) -> None:
    """Show deliveries, newest first (--status dead: the dead letters).

    --json and --jsonl give each delivery as GET /deliveries does, its last error whole.
    """
    from app.notifications.reads import notification_record
    from app.storage.notifications import NotificationFilter, list_notifications

    flt = NotificationFilter(
        since=_since(since), route=route, statuses=(status,) if status else None
    )
    rows = app_ctx.read(lambda conn: list_notifications(conn, flt, limit=limit))
    print_listing(
        [notification_record(row) for row in rows],
        [
            Column("id", "id", whole=True),
            Column("created", "createdAt", whole=True, drop=4),
            Column("activity", "activityId", whole=True, justify="right"),
            Column("route", "route"),
            Column("destination", "destination", drop=5),
            Column("event", "event", whole=True, drop=3),
            Column("status", "status", whole=True),
            Column("tries", "attempts", whole=True, justify="right", drop=2),
            Column("last error", "lastError", preview=60, drop=1),
        ],
        output,
        empty="no deliveries",
    )


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
