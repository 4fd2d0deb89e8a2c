"""Loading from NinjaOne's API: the entity cache (``sync``) and missed activities (``backfill``).

Backfill stores through :func:`app.ingest.service.ingest_activity` with source
``backfill``, so hooks and idempotency are exactly those of a webhook delivery.
The raw bytes of a backfilled activity are the JSON of the activity object as
the API returned it.

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
from app.ingest.service import ingest_activity
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


@dataclass
class SyncResult:
    """Per kind (organizations, locations, devices): added, updated, unchanged."""

    counts: dict[str, store.SyncCounts] = field(default_factory=dict)


def sync_entities(
    state: AppState,
    client: NinjaOneClient,
    *,
    page_size: int = 200,
    progress: Progress = _no_progress,
) -> SyncResult:
    """Load every organization, location and device into the cache, page by page.

    Each page commits on its own, as of the moment it was fetched, so an
    interrupted sync keeps what it loaded and a rerun continues to be correct.
    """
    result = SyncResult()
    kinds: tuple[tuple[str, Any, Any, Callable[[dict[str, Any]], dict[str, Any]]], ...] = (
        (
            "organizations",
            client.organizations,
            organizations,
            lambda o: organization_row(o, full=True),
        ),
        ("locations", client.locations, locations, lambda loc: location_row(loc, full=True)),
        ("devices", client.devices, devices, device_row),
    )
    for kind, pages, table, to_row in kinds:
        counts = store.SyncCounts()
        done = 0
        progress(kind, 0)
        for page in pages(page_size=page_size):
            rows = [to_row(item) for item in page if isinstance(item.get("id"), int)]
            now = time.time()
            with state.db.begin() as conn:
                counts += store.sync_rows(conn, table, rows, now)
            done += len(rows)
            progress(kind, done)
        result.counts[kind] = counts
    return result


@dataclass
class BackfillResult:
    """What a backfill did. ``start`` is the id it fetched after (None: ``since`` only)."""

    fetched: int = 0
    new: int = 0
    present: int = 0
    skipped: int = 0
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
    except Exception:
        _count_run(state, "failed")
        raise
    _count_run(state, "ok")
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
        raw = json.dumps(activity, separators=(",", ":"), ensure_ascii=False).encode()
        stored = ingest_activity(state, raw, activity, source="backfill")
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
        "backfill: %d fetched, %d new, %d already stored (%.1fs)",
        result.fetched,
        result.new,
        result.present,
        time.monotonic() - started,
    )
