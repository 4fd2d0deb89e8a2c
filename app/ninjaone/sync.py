"""Loading from NinjaOne's API: the entity cache (``sync``) and missed activities (``backfill``).

Backfill stores through :func:`app.ingest.service.ingest_activity` with source
``backfill``, so hooks and idempotency are exactly those of a webhook delivery.
The raw bytes of a backfilled activity are the JSON of the activity object as
the API returned it. Before it is stored, an activity passes the validation a webhook
delivery's body passes (:func:`app.ingest.validation.validate_activity`); one that
fails is kept as a rejected delivery, with a reason that says it came from backfill,
and the backfill goes on past it, so one odd activity cannot stop every backfill at
the same checkpoint.

Where backfill starts: after the *backfill checkpoint*, the newest activity id up
to which NinjaOne's whole log has been seen (set by ``configure`` when the webhook
starts delivering, and by each complete backfill). Starting after the newest
*stored* id instead would skip every delivery NinjaOne dropped before a later one
arrived. Without a checkpoint, backfill starts after the newest stored id.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.entities.service import device_row, location_row, organization_row
from app.ingest.rejected import Rejection, keep_rejected
from app.ingest.service import ingest_activity
from app.ingest.validation import InvalidBody, first_non_finite, validate_activity
from app.ninjaone import runs
from app.ninjaone.client import NinjaOneClient, NinjaOneError
from app.state import AppState
from app.storage import activities as activity_store
from app.storage import entities as store
from app.storage.tables import devices, locations, organizations

log = logging.getLogger(__name__)

BACKFILL_TASK = "ninjaone-backfill"

BACKFILL_CHECKPOINT = "backfill"

# Called with (what, how many done so far) while work progresses; the CLI draws it.
Progress = Callable[[str, int], None]


def _no_progress(_what: str, _done: int) -> None:
    return None


SYNC_TASK = "ninjaone-sync"

# The kinds a sync loads, in this order (organizations before the locations and devices
# that name them).
SYNC_KINDS = ("organizations", "locations", "devices")


@dataclass
class SyncResult:
    """Per kind (organizations, locations, devices): added, updated, unchanged; and the
    ids each kind's complete listing no longer had, now marked deleted."""

    counts: dict[str, store.SyncCounts] = field(default_factory=dict)
    deleted: dict[str, list[int]] = field(default_factory=dict)


def sync_entities(
    state: AppState,
    client: NinjaOneClient,
    *,
    page_size: int = 200,
    progress: Progress = _no_progress,
    kinds: tuple[str, ...] = SYNC_KINDS,
    by: str = "sync",
) -> SyncResult:
    """Load every organization, location and device (or only ``kinds``) into the cache,
    page by page, stamping each row refreshed by ``by``.

    Each page commits on its own, as of the moment it was fetched, so an
    interrupted sync keeps what it loaded and a rerun continues to be correct. When a
    kind's listing completes, every cached entity of that kind it did not list (and no
    delivery refreshed meanwhile) is marked deleted: kept, with its name, never removed.
    """
    result = SyncResult()
    listings: dict[str, tuple[Any, Any, Callable[[dict[str, Any]], dict[str, Any]]]] = {
        "organizations": (
            client.organizations,
            organizations,
            lambda o: organization_row(o, full=True),
        ),
        "locations": (client.locations, locations, lambda loc: location_row(loc, full=True)),
        "devices": (client.devices, devices, device_row),
    }
    for kind in kinds:
        pages, table, to_row = listings[kind]
        counts = store.SyncCounts()
        done = 0
        started = time.time()
        progress(kind, 0)
        for page in pages(page_size=page_size):
            rows = [to_row(item) for item in page if isinstance(item.get("id"), int)]
            now = time.time()
            with state.db.begin() as conn:
                counts += store.sync_rows(conn, table, rows, now, by)
            done += len(rows)
            progress(kind, done)
        result.counts[kind] = counts
        with state.db.begin() as conn:
            result.deleted[kind] = store.mark_unseen_deleted(conn, table, started, time.time(), by)
        if result.deleted[kind]:
            log.info(
                "sync: %d %s no longer in NinjaOne, marked deleted", len(result.deleted[kind]), kind
            )
    if set(kinds) == set(SYNC_KINDS):
        # For `ninjahook status`: when the cache was last complete, and what NinjaOne listed.
        runs.record_sync(
            state, {k: c.added + c.updated + c.unchanged for k, c in result.counts.items()}
        )
    return result


def run_sync(state: AppState) -> None:
    """The periodic task (NINJAHOOK_SYNC_INTERVAL): one full sync, logged."""
    started = time.monotonic()
    try:
        with NinjaOneClient.from_config(state.config) as client:
            result = sync_entities(state, client)
    except NinjaOneError as exc:
        log.warning("entity sync failed: %s", exc)
        return
    log.info(
        "entity sync: %s (%.1fs)",
        ", ".join(
            f"{kind} {c.added} added, {c.updated} updated, {c.unchanged} unchanged, "
            f"{len(result.deleted.get(kind, []))} deleted"
            for kind, c in result.counts.items()
        ),
        time.monotonic() - started,
    )


@dataclass
class BackfillResult:
    """What a backfill did. ``start`` is the id it fetched after (None: ``since`` only)."""

    fetched: int = 0
    new: int = 0
    present: int = 0
    skipped: int = 0
    rejected: int = 0
    start: int | None = None
    checkpoint: int | None = None
    note: str = ""


def backfill(
    state: AppState,
    client: NinjaOneClient,
    *,
    since: float | None = None,
    page_size: int = 200,
    progress: Progress = _no_progress,
) -> BackfillResult:
    """Fetch the activities NinjaOne has and this database lacks, and store them.

    :param since: epoch seconds; fetch everything from then on instead of after the
        checkpoint.

    All pages are fetched first and stored oldest first: the checkpoint moves only
    after everything below it is stored, so an interrupted backfill loses nothing.
    Each run is counted in ``ninjahook_backfill_runs_total`` (outcome ok or failed).
    """
    try:
        result = _backfill(state, client, since=since, page_size=page_size, progress=progress)
    except Exception as exc:
        _count_run(state, "failed")
        runs.record_backfill(state, error=exc)  # for `ninjahook status`
        raise
    _count_run(state, "ok")
    runs.record_backfill(
        state,
        fetched=result.fetched,
        new=result.new,
        present=result.present,
        rejected=result.rejected,
    )
    return result


def _count_run(state: AppState, outcome: str) -> None:
    # Best effort: failing to count a run must not fail (or hide the failure of) the run.
    try:
        from app.metrics.service import record_backfill_run

        record_backfill_run(outcome, state)
    except Exception as exc:
        log.warning("metrics: could not count the backfill run: %s", exc.__class__.__name__)


def _backfill(
    state: AppState,
    client: NinjaOneClient,
    *,
    since: float | None,
    page_size: int,
    progress: Progress,
) -> BackfillResult:
    result = BackfillResult()
    with state.db.connect() as conn:
        checkpoint = store.get_checkpoint(conn, BACKFILL_CHECKPOINT)
        newest = activity_store.newest_activity_id(conn)
    if since is None:
        result.start = checkpoint if checkpoint is not None else newest
        if result.start is None:
            # Nothing stored and no checkpoint: the log before now is history the user
            # did not ask for (`--since` imports it). Start from here.
            last = client.last_activity_id()
            if last is not None:
                with state.db.begin() as conn:
                    store.advance_checkpoint(conn, BACKFILL_CHECKPOINT, last, time.time())
            result.checkpoint = last
            result.note = "nothing stored yet: starting from NinjaOne's newest activity"
            return result

    collected: dict[int, dict[str, Any]] = {}
    for page in client.activities(newer_than=result.start, since=since, page_size=page_size):
        for activity in page:
            activity_id = activity.get("id")
            if (
                isinstance(activity_id, int)
                and not isinstance(activity_id, bool)
                and activity_id >= 0
            ):
                collected[activity_id] = activity
            else:
                result.skipped += 1
        progress("fetching", len(collected))
    result.fetched = len(collected)

    for done, activity_id in enumerate(sorted(collected), start=1):
        activity = collected[activity_id]
        raw = wire_form(activity)
        try:
            payload = checked_activity(activity, raw)
        except InvalidBody as exc:
            reject_from_backfill(state, activity_id, raw, exc)
            result.rejected += 1
            progress("storing", done)
            continue
        stored = ingest_activity(state, raw, payload, source="backfill")
        if stored.duplicate:
            result.present += 1
        else:
            result.new += 1
        progress("storing", done)

    reached = max(collected) if collected else None
    # After a --since run the log is known complete only from `since` on: it may become
    # the checkpoint when there is none, but never moves an existing one over a gap.
    if reached is not None and (since is None or checkpoint is None):
        with state.db.begin() as conn:
            store.advance_checkpoint(conn, BACKFILL_CHECKPOINT, reached, time.time())
    result.checkpoint = reached if reached is not None else checkpoint
    return result


def wire_form(activity: dict[str, Any]) -> bytes:
    """The bytes stored for an activity from the API: its compact JSON, as UTF-8 (with
    ``\\u`` escapes instead when it holds text UTF-8 cannot encode, a lone surrogate)."""
    try:
        return json.dumps(activity, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(activity, separators=(",", ":")).encode()


def checked_activity(activity: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """The activity as a webhook delivery of ``raw`` would be parsed and validated.

    :raises InvalidBody: naming the field, as a webhook delivery's 400 would.
    """
    # The API's JSON was parsed leniently (an overflowing 1e400 became inf), so name a
    # number JSON cannot carry before it is written as Infinity.
    field = first_non_finite(activity)
    if field is not None:
        raise InvalidBody(
            f"{field}: is not a finite number (beyond the range of a 64-bit float)", field=field
        )
    return validate_activity(raw)


def reject_from_backfill(state: AppState, activity_id: int, raw: bytes, exc: InvalidBody) -> None:
    """Keep an activity from the API that failed validation as a rejected delivery."""
    rejection = Rejection(
        reason=f"backfill: activity {activity_id} from NinjaOne's API: {exc.detail}",
        field=exc.field,
        body=raw,
        body_bytes=len(raw),
        truncated=False,
        content_type="application/json",
    )
    rejected_id = keep_rejected(state, rejection)
    log.warning("backfill: rejected activity %d (kept as %d): %s", activity_id, rejected_id, exc)


def mark_webhook_start(state: AppState, client: NinjaOneClient) -> int | None:
    """Record NinjaOne's newest activity id as the backfill checkpoint, unless one exists.

    ``configure`` calls this: from now on the webhook delivers, and backfill must
    cover everything after this point that a delivery missed.
    """
    with state.db.connect() as conn:
        if store.get_checkpoint(conn, BACKFILL_CHECKPOINT) is not None:
            return None
    last = client.last_activity_id()
    if last is not None:
        with state.db.begin() as conn:
            store.advance_checkpoint(conn, BACKFILL_CHECKPOINT, last, time.time())
    return last


def run_backfill(state: AppState) -> None:
    """The periodic task: one backfill with the configured credentials, logged."""
    started = time.monotonic()
    try:
        with NinjaOneClient.from_config(state.config) as client:
            result = backfill(state, client)
    except NinjaOneError as exc:
        log.warning("backfill failed: %s", exc)
        return
    log.info(
        "backfill: %d fetched, %d new, %d already stored, %d rejected (%.1fs)",
        result.fetched,
        result.new,
        result.present,
        result.rejected,
        time.monotonic() - started,
    )
