"""Rejected deliveries: authenticated bodies that failed validation, kept with the reason."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.state import AppState
from app.storage import activities as store


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
    """Store an authenticated delivery that failed validation, with the reason."""
    limit = state.config.max_body_bytes
    body = rejection.body[:limit]
    with state.db.begin() as conn:
        return store.insert_rejected(
            conn,
            received_at=time.time(),
            reason=rejection.reason,
            field=rejection.field,
            content_type=rejection.content_type,
            body=body,
            body_bytes=rejection.body_bytes,
            truncated=rejection.truncated or len(body) < len(rejection.body),
        )
