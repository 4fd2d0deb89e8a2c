"""Storing deliveries: exactly once, committed before the answer."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from app.ingest.payload import Subjects, dig
from app.ingest.pipeline import StoredActivity
from app.ingest.text import (
    INDEXED_TEXT_LIMIT,
    SERIES_UID_LIMIT,
    bounded_text,
    clean_payload,
    may_hold_unstorable,
    text,
)
from app.spec.generated import KNOWN_VALUES
from app.state import AppState
from app.storage import activities as store

log = logging.getLogger(__name__)

SOURCES = ("webhook", "backfill")


@dataclass(frozen=True)
class IngestResult:
    """What happened to one delivery."""

    id: int
    duplicate: bool
    activity_type: str | None = None


def _number(value: Any) -> float | None:
    # Validation has ruled out numbers beyond a double's range; a finite activityTime that
    # is no time (negative, after year 9999) is stored as sent and shown raw.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def activity_row(payload: dict[str, Any], raw: bytes, source: str, now: float) -> dict[str, Any]:
    """The stored columns for a validated payload (ids as :class:`Subjects` reads them).

    Text columns follow :mod:`app.ingest.text`: NUL and lone surrogates become U+FFFD,
    seriesUid is bounded to 300 characters, activityType and sourceName (indexed) to 500.
    ``raw`` is stored exactly.
    """
    subjects = Subjects.of(payload)
    return {
        "id": payload["id"],
        "activity_time": _number(payload.get("activityTime")),
        "device_id": subjects.device_id,
        "organization_id": subjects.organization_id,
        "location_id": subjects.location_id,
        "activity_type": bounded_text(payload.get("activityType"), INDEXED_TEXT_LIMIT),
        "status_code": text(payload.get("statusCode")),
        "severity": text(payload.get("severity")),
        "priority": text(payload.get("priority")),
        "activity_result": text(payload.get("activityResult")),
        "series_uid": bounded_text(payload.get("seriesUid"), SERIES_UID_LIMIT),
        "source_config_uid": text(payload.get("sourceConfigUid")),
        "source_name": bounded_text(payload.get("sourceName"), INDEXED_TEXT_LIMIT),
        "user_id": payload.get("userId"),
        "message": text(payload.get("message")),
        "subject": text(payload.get("subject")),
        "source": source,
        "received_at": now,
        "raw": raw,
    }


def unknown_values(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, value) for every open-enum value that webhook.yaml does not list."""
    found = []
    for path, known in KNOWN_VALUES.items():
        value = dig(payload, path)
        if isinstance(value, str) and value not in known:
            found.append((".".join(path), value))
    return found


def storable(
    payload: dict[str, Any], raw: bytes, source: str, now: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The payload as the hooks store it, and its :func:`activity_row`."""
    if may_hold_unstorable(raw):
        # The hooks (entity cache, alerts, outbox) store text from the payload too.
        payload = clean_payload(payload)
    return payload, activity_row(payload, raw, source, now)


def store_in_transaction(
    state: AppState,
    conn: Connection,
    raw: bytes,
    payload: dict[str, Any],
    source: str,
    now: float,
    made: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> tuple[IngestResult, list[tuple[str, str]]]:
    """Store one validated activity and run the hooks, inside the caller's transaction.

    Returns the result and the unknown enum values of a new activity (counted here;
    log them with :func:`log_drift_once` once the transaction has committed).

    :param made: what :func:`storable` made of these arguments, when the caller has it.
    """
    payload, row = made if made is not None else storable(payload, raw, source, now)
    new = store.insert_activity(conn, row)
    drift: list[tuple[str, str]] = []
    if new:
        stored = StoredActivity(id=row["id"], source=source, received_at=now, row=row)
        state.pipeline.run(conn, payload, stored)
        drift = unknown_values(payload)
        for field, value in drift:
            store.record_spec_drift(conn, field, value, now)
    return IngestResult(id=row["id"], duplicate=not new, activity_type=row["activity_type"]), drift


def ingest_activity(
    state: AppState, raw: bytes, payload: dict[str, Any], *, source: str = "webhook"
) -> IngestResult:
    """Store one validated activity exactly once; the commit happens before this returns.

    Hooks registered on ``state`` run in the same transaction for new activities.
    A redelivered id changes nothing and reports ``duplicate=True``. Deliveries from
    the web go through :mod:`app.ingest.group_commit` instead, which shares one transaction
    among the deliveries that arrive together.
    Database errors propagate (the web layer answers 503).
    """
    with state.db.begin() as conn:
        result, drift = store_in_transaction(state, conn, raw, payload, source, time.time())
    if drift:
        log_drift_once(state, drift)
    return result


def log_drift_once(state: AppState, drift: list[tuple[str, str]]) -> None:
    """Log each unknown enum value once per process (the database counts every one)."""
    with state.drift.lock:
        fresh = [d for d in drift if d not in state.drift.logged]
        state.drift.logged.update(fresh)
    for field, value in fresh:
        log.warning(
            "spec drift: %s=%r is not a known value in webhook.yaml; stored anyway. "
            "Add it to the x-extensible-enum list and run `make regenerate`.",
            field,
            value,
        )
