"""NinjaOne commands: ``configure``, ``disable``, ``sync``, ``backfill`` and ``emulator``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import sqlalchemy as sa

from app.cli.context import (
    AppContext,
    database_errors,
    describe_database_error,
    fail,
    pass_ctx,
)
from app.cli.output import Column, Output, Progress, listing_options, print_json, print_listing
from app.timeparse import parse_instant

T = TypeVar("T")

NINJAONE_HELP = (
    "Credentials come from NINJAONE_CLIENT_ID and NINJAONE_CLIENT_SECRET, the host from "
    "NINJAONE_REGION (app, us2, eu, ca, oc) or NINJAONE_BASE_URL."
)


@contextmanager
def _client(app_ctx: AppContext) -> Iterator[Any]:
    """A NinjaOne client from the settings; any API failure ends the command in one line."""
    from app.ninjaone.client import NinjaOneClient, NinjaOneError

    try:
        client = NinjaOneClient.from_config(app_ctx.config)
    except NinjaOneError as exc:
        fail(str(exc))
    try:
        yield client
    except NinjaOneError as exc:
        fail(str(exc))
    finally:
        client.close()


def _database_guard(app_ctx: AppContext, action: Callable[[], T]) -> T:
    """Run ``action``; a database failure ends the command in one line
    (:func:`app.cli.context.database_errors`)."""
    with database_errors(app_ctx.database_url(), "update"):
        return action()
    raise AssertionError("unreachable")


def parse_since(text: str) -> float:
    """Epoch seconds from ISO 8601, epoch seconds, or an age such as ``90m``, ``6h``, ``2d``."""
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


@click.command(epilog=NINJAONE_HELP)
@click.option(
    "--url",
    required=True,
    metavar="PUBLIC_URL",
    help="The receiver's public URL; /webhooks/ninjarmm/activity is appended when it has no path.",
)
@click.option(
    "--expand",
    default="device",
    show_default=True,
    metavar="LIST",
    help="What NinjaOne expands in each payload: device, organization, location (comma-separated).",
)
@click.option(
    "--activity",
    "activities",
    multiple=True,
    metavar="TYPE=STATUS[,STATUS...]",
    help="Activities to deliver (repeatable); TYPE alone or TYPE=* means every status. "
    "Default: CONDITION=* and SYSTEM=*.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the request body (token masked); send nothing."
)
@click.option("--allow-http", is_flag=True, help="Accept an http:// URL (local tests only).")
@pass_ctx
def configure(
    app_ctx: AppContext,
    url: str,
    expand: str,
    activities: tuple[str, ...],
    dry_run: bool,
    allow_http: bool,
) -> None:
    """Point NinjaOne's webhook at this receiver (PUT /v2/webhook).

    The body carries `Authorization: Bearer <webhook token>` as a header NinjaOne
    sends with every delivery; the token is the first of NINJAHOOK_WEBHOOK_TOKENS,
    or the instance folder's generated one. The API client needs system-administrator
    rights. Afterwards `backfill` recovers whatever a delivery misses from this point on.
    """
    from app.ninjaone import webhook_config
    from app.tokens import load_or_create_token

    # Every setting, the instance folder and the routes file are checked before anything
    # changes here or in NinjaOne: a bad one fails with one line and no PUT is sent.
    config = app_ctx.startup_config()
    if config.webhook_tokens:
        token = config.webhook_tokens[0]
    else:
        token, created = load_or_create_token(config.instance, "webhook")
        if created:
            click.echo(
                f"Generated a webhook token in {config.instance / 'webhook-token'}; "
                "`ninjahook serve` accepts it.",
                err=True,
            )
    try:
        configuration = webhook_config.build(
            url=url, token=token, expand=expand, activities=activities, allow_http=allow_http
        )
    except webhook_config.WebhookConfigError as exc:
        fail(str(exc))
    for warning in configuration.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if dry_run:
        click.echo(json.dumps(configuration.masked(), indent=2))
        return

    from app.ninjaone.runs import record_webhook
    from app.ninjaone.sync import mark_webhook_start

    state = app_ctx.state()  # built before the PUT: nothing in it can fail afterwards
    try:
        with _client(app_ctx) as client:
            client.configure_webhook(configuration.body)
            body = configuration.body
            # For `ninjahook status` (NinjaOne's API cannot show its webhook setting).
            record_webhook(state.db, enabled=True, activity_types=len(body["activities"]))
            click.echo(
                f"NinjaOne now delivers {', '.join(body['activities'])} activities to "
                f"{body['url']} (expand: {', '.join(body['expand']) or 'nothing'})."
            )
            try:
                start = mark_webhook_start(state, client)
            except sa.exc.SQLAlchemyError as exc:
                # The webhook is set; only the backfill starting point is missing, so warn.
                click.secho(
                    "warning: could not record where backfill starts "
                    f"({describe_database_error(app_ctx.database_url(), exc)}); "
                    "run `ninjahook migrate`, then `ninjahook backfill` after deliveries begin",
                    fg="yellow",
                    err=True,
                )
                start = None
    finally:
        state.db.dispose()
    if start is not None:
        click.echo(
            f"`ninjahook backfill` will recover any activity after id {start} that is missed."
        )


@click.command(epilog=NINJAONE_HELP)
@pass_ctx
def disable(app_ctx: AppContext) -> None:
    """Stop NinjaOne's webhook deliveries (DELETE /v2/webhook)."""
    from app.ninjaone.runs import record_webhook

    with _client(app_ctx) as client:
        client.disable_webhook()
    db = app_ctx.database()
    try:
        record_webhook(db, enabled=False)  # for `ninjahook status`; best effort
    finally:
        db.dispose()
    click.echo("NinjaOne's webhook is disabled; no more deliveries will arrive.")


@click.command(epilog=NINJAONE_HELP)
@click.option(
    "--page-size",
    default=200,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Items per API request.",
)
@listing_options()
@pass_ctx
def sync(app_ctx: AppContext, page_size: int, output: Output) -> None:
    """Load every organization, location and device from NinjaOne into the cache.

    Deliveries keep the cache fresh afterwards; run this once after setup and whenever
    names look stale. Prints added, updated and unchanged per kind (--json: an object
    per kind; --jsonl: one line per kind, with its name).
    """
    from app.ninjaone.sync import sync_entities

    state = app_ctx.state()
    try:
        with _client(app_ctx) as client, Progress() as progress:
            result = _database_guard(
                app_ctx,
                lambda: sync_entities(state, client, page_size=page_size, progress=progress),
            )
    finally:
        state.db.dispose()
    rows = [
        {
            "kind": kind,
            "added": counts.added,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "deleted": len(result.deleted.get(kind, ())),
        }
        for kind, counts in result.counts.items()
    ]
    print_listing(
        rows,
        [
            Column("", "kind", whole=True),
            Column("added", "added", whole=True),
            Column("updated", "updated", whole=True),
            Column("unchanged", "unchanged", whole=True),
        ],
        output,
        empty="nothing to sync",
        document={row["kind"]: {k: v for k, v in row.items() if k != "kind"} for row in rows},
    )


@click.command(epilog=NINJAONE_HELP)
@click.option(
    "--since",
    metavar="TIME",
    help="Fetch everything from TIME on (ISO 8601, epoch seconds, or an age: 6h, 2d) "
    "instead of after the last checkpoint.",
)
@click.option(
    "--page-size",
    default=200,
    show_default=True,
    type=click.IntRange(10, 1000),
    help="Activities per API request.",
)
@listing_options(jsonl=False)
@pass_ctx
def backfill(app_ctx: AppContext, since: str | None, page_size: int, output: Output) -> None:
    """Store the activities NinjaOne has that were never delivered (GET /v2/activities).

    Starts after the newest activity id up to which NinjaOne's log is known complete
    (recorded by `configure` and by each backfill), else after the newest stored id.
    Idempotent: an activity already stored is counted, not stored again. --json prints
    the counts as one object.
    """
    from app.ninjaone.sync import backfill as run_backfill

    since_ts = parse_since(since) if since else None
    state = app_ctx.state()
    try:
        with _client(app_ctx) as client, Progress() as progress:
            result = _database_guard(
                app_ctx,
                lambda: run_backfill(
                    state, client, since=since_ts, page_size=page_size, progress=progress
                ),
            )
    finally:
        state.db.dispose()
    if output == "json":
        print_json(dataclasses.asdict(result))
    else:
        if result.note:
            click.echo(result.note)
        click.echo(
            f"backfill: {result.fetched} fetched, {result.new} new, "
            f"{result.present} already stored"
            + (f", {result.skipped} without a usable id" if result.skipped else "")
            + (f", {result.rejected} rejected (kept)" if result.rejected else "")
            + (f"; checkpoint {result.checkpoint}" if result.checkpoint is not None else "")
        )
    if not app_ctx.config.routes_file:
        # Routes are read in this process: without them, what backfill stored here was
        # not enqueued for notification, whatever routes the server has.
        click.secho(
            "warning: NINJAHOOK_ROUTES is not set: recovered activities will notify nobody "
            "from this shell; set NINJAHOOK_ROUTES as the server has it",
            fg="yellow",
            err=True,
        )


DEFAULT_EMULATOR_SECRET = "emulator-client-secret"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9090, show_default=True, type=int, help="Port to listen on.")
@click.option("--client-id", default="emulator-client-id", show_default=True)
@click.option("--client-secret", default=DEFAULT_EMULATOR_SECRET, help="Accepted client secret.")
@click.option(
    "--rate",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 1000),
    help="New activities per second (0: none).",
)
@click.option(
    "--drop",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Probability that a delivery is silently not sent.",
)
@click.option(
    "--duplicate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Probability that a delivery is sent twice.",
)
@click.option(
    "--history",
    default=50,
    show_default=True,
    type=click.IntRange(0, 100000),
    help="Activities that exist before the start (for backfill --since).",
)
@click.option(
    "--seed", default=1, show_default=True, type=int, help="Seed of the tenant and stream."
)
def emulator(
    host: str,
    port: int,
    client_id: str,
    client_secret: str,
    rate: float,
    drop: float,
    duplicate: float,
    history: int,
    seed: int,
) -> None:
    """Run a NinjaOne emulator: token endpoint, /v2/webhook, entities, activities, deliveries.

    Seeded with three organizations, their locations and devices. It produces
    condition triggers and resets, script runs, patching and device approvals at
    --rate, and POSTs each to the webhook that `ninjahook configure` sets, with its
    headers, dropping or duplicating some when asked. Stop it with Ctrl-C.
    """
    import logging

    from app.ninjaone.emulator import Emulator

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    emu = Emulator(
        host=host,
        port=port,
        client_id=client_id,
        client_secret=client_secret,
        rate=rate,
        drop=drop,
        duplicate=duplicate,
        history=history,
        seed=seed,
    )
    shown_secret = (
        client_secret if client_secret == DEFAULT_EMULATOR_SECRET else "<your --client-secret>"
    )
    click.echo(f"NinjaOne emulator on {emu.url}. Point ninjahook at it with:", err=True)
    click.echo(f"  export NINJAONE_BASE_URL={emu.url}", err=True)
    click.echo(f"  export NINJAONE_CLIENT_ID={client_id}", err=True)
    click.echo(f"  export NINJAONE_CLIENT_SECRET={shown_secret}", err=True)
    try:
        emu.serve_forever()
    except KeyboardInterrupt:
        pass
    except (OSError, RuntimeError) as exc:
        fail(f"emulator: {exc}")


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    for command in (configure, disable, sync, backfill, emulator):
        group.add_command(command)
