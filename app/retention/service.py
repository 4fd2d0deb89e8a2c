"""Retention: activities received long ago, rejected deliveries and the outbox rows of pruned
activities are deleted daily, in batches.

Each batch is its own short transaction, so ingest never waits long for a lock.
The history of open alerts is kept whatever its age, and rejected deliveries are
kept for at least :data:`REJECTED_KEEP_DAYS` days. So are dead letters, counted from
when they died, with their activities, so an operator can still retry them after an
outage. A pending or in-flight delivery is never deleted, nor is its activity.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.state import AppState
from app.storage import retention as store
from app.storage.db import Database

log = logging.getLogger(__name__)

DAY = 86400.0
REJECTED_KEEP_DAYS = 30
DEFAULT_BATCH = 2000


@dataclass
class PruneResult:
    """How many rows were deleted so far."""

    activities: int = 0
    rejected: int = 0
    # Routed deliveries (the outbox) of pruned activities, and routes' states of
    # resolved alerts whose activities are gone.
    deliveries: int = 0
    route_notices: int = 0


def prune_database(
    db: Database,
    *,
    retention_days: int,
    batch_size: int = DEFAULT_BATCH,
    now: float | None = None,
    progress: Callable[[PruneResult], None] | None = None,
) -> PruneResult:
    """Delete activities received more than ``retention_days`` ago and rejected deliveries
    older than ``max(retention_days, 30)`` days, ``batch_size`` rows per transaction.

    An activity's age counts from when it arrived (``received_at``), not from its
    activityTime: an old-dated activity (backfill, replay, wrong clock) is kept for the
    whole period, so a redelivery of it is still recognised as a duplicate.

    With an activity go its delivered deliveries and its dead letters that died more
    than ``max(retention_days, 30)`` days ago; an activity with a younger dead letter,
    or with a delivery still pending or in flight, is kept until that is settled.
    Then the routes' states of resolved alerts whose activities are all gone.

    ``retention_days`` 0 keeps everything.

    :param progress: called after every batch with the running totals.
    """
    result = PruneResult()
    if retention_days <= 0:
        return result
    now = time.time() if now is None else now
    activity_cutoff = now - retention_days * DAY
    rejected_cutoff = now - max(retention_days, REJECTED_KEEP_DAYS) * DAY
    # Dead letters are kept as long as rejected deliveries: both wait for an operator.
    dead_letter_cutoff = rejected_cutoff

    def report() -> None:
        if progress is not None:
            progress(result)

    after_id: int | None = None
    while True:
        with db.begin() as conn:
            pruned = store.prune_activities_batch(
                conn,
                activity_cutoff,
                batch_size,
                dead_letter_cutoff=dead_letter_cutoff,
                after_id=after_id,
            )
        result.activities += pruned.activities
        result.deliveries += pruned.deliveries
        if pruned.activities:
            report()
        if pruned.after_id is None:
            break
        after_id = pruned.after_id
    while True:
        with db.begin() as conn:
            deleted = store.prune_rejected_batch(conn, rejected_cutoff, batch_size)
        result.rejected += deleted
        if deleted:
            report()
        if deleted < batch_size:
            break
    after: int | None = 0
    while after is not None:
        with db.begin() as conn:
            deleted, after = store.prune_deliveries_batch(
                conn, dead_letter_cutoff, batch_size, after_id=after
            )
        result.deliveries += deleted
        if deleted:
            report()
    while True:
        with db.begin() as conn:
            deleted = store.prune_route_notices_batch(conn, batch_size)
        result.route_notices += deleted
        if deleted:
            report()
        if deleted < batch_size:
            break
    return result


def prune_task(state: AppState) -> PruneResult:
    """The daily periodic task: prune with the configured retention."""
    result = prune_database(state.db, retention_days=state.config.retention_days)
    with state.db.begin() as conn:
        store.optimize(conn)
    log.info(
        "pruned %d activities, %d rejected deliveries, %d routed deliveries "
        "and %d routes' alert states",
        result.activities,
        result.rejected,
        result.deliveries,
        result.route_notices,
    )
    return result
