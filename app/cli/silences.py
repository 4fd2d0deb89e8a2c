"""CLI commands for silences: ``silence add``, ``silence list`` and ``silence expire``."""

from __future__ import annotations

import getpass
import json
from typing import Any

import click

from app.cli.context import AppContext, database_errors, fail, pass_ctx
from app.cli.output import Column, Output, listing_options, print_listing


def register(group: click.Group) -> None:
    """Add ``silence`` to ``group``."""
    group.add_command(silence_group)


def default_author() -> str:
    """Who a command acts as unless ``--author`` says: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


author_option = click.option(
    "--author",
    default=default_author,
    show_default="cli:<your login name>",
    help="Who the action is recorded under.",
)


@click.group("silence")
def silence_group() -> None:
    """Silences: hold back the notifications of matching activities for a while."""


@silence_group.command("add")
@click.option("--device", "devices", multiple=True, help="A device id or name (repeatable).")
@click.option(
    "--organization",
    "organizations",
    multiple=True,
    help="An organization id or name (repeatable).",
)
@click.option(
    "--condition", "conditions", multiple=True, help="A condition's sourceConfigUid (repeatable)."
)
@click.option("--alert-key", "alert_keys", multiple=True, help="An alert's key (repeatable).")
@click.option(
    "--match",
    "match_json",
    help='More matchers as a JSON object with route-match keys, e.g. \'{"minSeverity": "MAJOR"}\'.',
)
@click.option("--duration", help="How long: 30m, 4h, 1d, 2w (or give --ends-at).")
@click.option("--starts-at", help="ISO 8601 or epoch seconds. [default: now]")
@click.option("--ends-at", help="ISO 8601 or epoch seconds.")
@click.option("--comment", required=True, help="Why (shown with the silence).")
@author_option
@pass_ctx
def silence_add(
    app_ctx: AppContext,
    devices: tuple[str, ...],
    organizations: tuple[str, ...],
    conditions: tuple[str, ...],
    alert_keys: tuple[str, ...],
    match_json: str | None,
    duration: str | None,
    starts_at: str | None,
    ends_at: str | None,
    comment: str,
    author: str,
) -> None:
    """Silence what the options match (every one given must match), for --duration or
    until --ends-at. Prints the new silence's id."""
    from app.silences.service import SilenceError, add_silence

    matchers: dict[str, Any] = {}
    if match_json:
        try:
            extra = json.loads(match_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--match") from None
        if not isinstance(extra, dict):
            raise click.BadParameter("expected a JSON object", param_hint="--match")
        matchers.update(extra)
    for key, values in (
        ("device", devices),
        ("organization", organizations),
        ("sourceConfigUid", conditions),
        ("alertKey", alert_keys),
    ):
        if values:
            ids: list[Any] = [
                int(v) if v.isdigit() and key in ("device", "organization") else v for v in values
            ]
            matchers[key] = ids
    state = app_ctx.state()
    try:
        with database_errors(app_ctx.database_url(), "update"):
            try:
                silence = add_silence(
                    state,
                    matchers=matchers,
                    comment=comment,
                    created_by=author,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    duration=duration,
                )
            except SilenceError as exc:
                fail(f"silence not added: {exc}")
    finally:
        state.db.dispose()
    click.echo(f"silence {silence['id']} added, until {silence['endsAt']}")


@silence_group.command("list")
@click.option(
    "--state",
    "wanted",
    type=click.Choice(["active", "pending", "expired", "all"]),
    default="active",
    show_default=True,
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000))
@listing_options()
@pass_ctx
def silence_list(app_ctx: AppContext, wanted: str, limit: int, output: Output) -> None:
    """Show silences, newest first; --json gives each as GET /silences does."""
    import time

    from app.silences.service import silence_record
    from app.storage import silences as store

    now = time.time()
    state_filter = None if wanted == "all" else wanted
    rows = app_ctx.read(
        lambda conn: store.list_silences(conn, now, state_filter, limit=limit, before_id=None)
    )
    records = [silence_record(r, now) for r in rows]
    if output != "table":
        print_listing(records, [], output, empty="no silences")
        return
    print_listing(
        [{**r, "matchersText": json.dumps(r["matchers"], ensure_ascii=False)} for r in records],
        [
            Column("id", "id", whole=True, justify="right"),
            Column("state", "state", whole=True),
            Column("ends", "endsAt", whole=True),
            Column("by", "createdBy"),
            Column("matchers", "matchersText"),
            Column("comment", "comment", preview=60),
        ],
        output,
        empty="no silences",
    )


@silence_group.command("expire")
@click.argument("silence_id", type=click.IntRange(1, 2**31 - 1))
@author_option
@pass_ctx
def silence_expire(app_ctx: AppContext, silence_id: int, author: str) -> None:
    """End a silence now."""
    from app.silences.service import expire_silence

    state = app_ctx.state()
    try:
        with database_errors(app_ctx.database_url(), "update"):
            expired = expire_silence(state, silence_id, author)
    finally:
        state.db.dispose()
    if expired is None:
        fail(f"no silence with id {silence_id}")
        return
    click.echo(f"silence {silence_id} expired at {expired['endsAt']}")
