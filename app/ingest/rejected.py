"""Rejected deliveries: authenticated bodies that failed validation, kept with the reason.

What is kept is capped: at most ``NINJAHOOK_REJECTED_MAX_ROWS`` rows and
``NINJAHOOK_REJECTED_MAX_BYTES`` bytes of bodies. Keeping one more drops the oldest,
in batches of at most :data:`TRIM_BATCH` rows per transaction, and counts the drop
(:data:`app.storage.rejected.DROPPED_COUNTER`), so an authenticated sender that sends
nothing but invalid bodies cannot fill the disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from app.ingest.text import clean, text
from app.state import AppState
from app.storage import activities as store
from app.storage import rejected as capped

# Most rows one trimming transaction deletes (only after the caps were lowered does a
# keep need more than one, and each then releases the writer in between).
TRIM_BATCH = 500


@dataclass(frozen=True)
class Rejection:
    """Why an authenticated delivery failed validation, with what was received."""

    reason: str
    field: str | None
    body: bytes
    body_bytes: int
    truncated: bool
    content_type: str | None


def keep_rejected(state: AppState, rejection: Rejection) -> int:
    """Store an authenticated delivery that failed validation, with the reason, then drop
    the oldest ones beyond the caps."""
    config = state.config
    limit = min(config.max_body_bytes, config.rejected_max_bytes)
    body = rejection.body[:limit]
    with state.db.begin() as conn:
        kept = store.insert_rejected(
            conn,
            received_at=time.time(),
            # A field name (a duplicate key) may hold a NUL or a lone surrogate.
            reason=clean(rejection.reason),
            field=text(rejection.field),
            content_type=text(rejection.content_type),
            body=body,
            body_bytes=rejection.body_bytes,
            truncated=rejection.truncated or len(body) < len(rejection.body),
        )
        capped.note_kept(conn, len(body))
        dropped = _trim(conn, state)
    while dropped == TRIM_BATCH:
        with state.db.begin() as conn:
            dropped = _trim(conn, state)
    return kept


def _trim(conn: Connection, state: AppState) -> int:
    return capped.trim_batch(
        conn,
        max_rows=state.config.rejected_max_rows,
        max_bytes=state.config.rejected_max_bytes,
        batch=TRIM_BATCH,
    )
