"""Retention: old activities and rejected deliveries are deleted daily, in batches.

Each batch is its own short transaction, so ingest never waits long for a lock.
The history of open alerts is kept whatever its age, and rejected deliveries are
kept for at least :data:`REJECTED_KEEP_DAYS` days.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.background import PeriodicTask
from app.db import Database
from app.state import AppState
from app.storage import retention as store

log = logging.getLogger(__name__)

DAY = 86400.0
REJECTED_KEEP_DAYS = 30
DEFAULT_BATCH = 2000


@dataclass
class PruneResult:
    """How many rows were deleted so far."""

    activities: int = 0
    rejected: int = 0


def prune_database(
    db: Database,
    *,
    retention_days: int,
    batch_size: int = DEFAULT_BATCH,
    now: float | None = None,
    progress: Callable[[PruneResult], None] | None = None,
) -> PruneResult:
    """Delete activities older than ``retention_days`` and rejected deliveries older than
    ``max(retention_days, 30)`` days, ``batch_size`` rows per transaction.

    ``retention_days`` 0 keeps everything.

    :param progress: called after every batch with the running totals.
    """
    result = PruneResult()
    if retention_days <= 0:
        return result
    now = time.time() if now is None else now
    activity_cutoff = now - retention_days * DAY
    rejected_cutoff = now - max(retention_days, REJECTED_KEEP_DAYS) * DAY
    while True:
        with db.begin() as conn:
            deleted = store.prune_activities_batch(conn, activity_cutoff, batch_size)
        result.activities += deleted
        if deleted and progress is not None:
            progress(result)
        if deleted < batch_size:
            break
    while True:
        with db.begin() as conn:
            deleted = store.prune_rejected_batch(conn, rejected_cutoff, batch_size)
        result.rejected += deleted
        if deleted and progress is not None:
            progress(result)
        if deleted < batch_size:
            break
    return result


def prune_task(state: AppState) -> PruneResult:
    """The daily periodic task: prune with the configured retention."""
    result = prune_database(state.db, retention_days=state.config.retention_days)
    with state.db.begin() as conn:
        store.optimize(conn)
    log.info("pruned %d activities and %d rejected deliveries", result.activities, result.rejected)
    return result


def install(state: AppState) -> list[PeriodicTask]:
    """Prune once a day, in one process only (see app.background)."""
    if state.config.retention_days <= 0:
        return []
    return [PeriodicTask(name="retention.prune", interval=DAY, run=prune_task)]
