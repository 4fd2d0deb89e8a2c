"""What the NinjaOne commands last did, recorded for ``ninjahook status``: the last
backfill and what it found, the last full entity sync and its counts, and when
``configure`` / ``disable`` last changed NinjaOne's webhook.

NinjaOne's API has no ``GET /v2/webhook`` (only PUT and DELETE), so the webhook
configuration NinjaOne holds cannot be read back; what ``configure`` last sent is the
best evidence. Everything is kept as numeric marks (:mod:`app.storage.status`).
Recording is best effort: a failure to record never fails or hides the run itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import sqlalchemy as sa

from app.ninjaone.client import (
    NinjaOneAuthError,
    NinjaOneError,
    NinjaOneForbidden,
    NinjaOneNotConfigured,
)
from app.state import AppState
from app.storage import status as store
from app.storage.db import Database

log = logging.getLogger(__name__)

BACKFILL = "backfill"
SYNC = "sync"
WEBHOOK = "webhook"

# Why the last backfill failed, as a number (marks hold numbers only).
FAILURES: dict[int, str] = {
    1: "NinjaOne rejected the client credentials (NINJAONE_CLIENT_ID/NINJAONE_CLIENT_SECRET)",
    2: "NinjaOne refused the API client (403): it lacks a permission or scope",
    3: "NinjaOne is not configured (credentials, region or base URL)",
    4: "NinjaOne's API failed (unreachable, timed out or answered an error)",
    5: "the database failed",
    9: "an unexpected error (see the server log)",
}


def failure_code(exc: BaseException) -> int:
    """The :data:`FAILURES` code of ``exc``."""
    if isinstance(exc, NinjaOneAuthError):
        return 1
    if isinstance(exc, NinjaOneForbidden):
        return 2
    if isinstance(exc, NinjaOneNotConfigured):
        return 3
    if isinstance(exc, NinjaOneError):
        return 4
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return 5
    return 9


def _record(db: Database, group: str, values: Mapping[str, int]) -> None:
    try:
        with db.begin() as conn:
            store.set_marks(conn, group, values, time.time())
    except Exception as exc:
        log.warning("status: could not record the %s run: %s", group, exc.__class__.__name__)


def record_backfill(
    state: AppState,
    *,
    fetched: int = 0,
    new: int = 0,
    present: int = 0,
    rejected: int = 0,
    error: BaseException | None = None,
) -> None:
    """Record a backfill's outcome (``error``: it failed)."""
    if error is not None:
        _record(state.db, BACKFILL, {"ok": 0, "failure": failure_code(error)})
        return
    _record(
        state.db,
        BACKFILL,
        {
            "ok": 1,
            "failure": 0,
            "fetched": fetched,
            "new": new,
            "present": present,
            "rejected": rejected,
        },
    )


def record_sync(state: AppState, counts: Mapping[str, int]) -> None:
    """Record a complete entity sync: how many of each kind NinjaOne listed."""
    _record(state.db, SYNC, {"complete": 1, **counts})


def record_webhook(db: Database, *, enabled: bool, activity_types: int = 0) -> None:
    """Record that ``configure`` (``enabled``) or ``disable`` just changed the webhook."""
    _record(db, WEBHOOK, {"enabled": int(enabled), "activity_types": activity_types})
