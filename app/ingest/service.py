"""Storing deliveries: exactly once, committed before the answer."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from app.spec.generated import KNOWN_VALUES
from app.state import AppState, Rejection, StoredActivity
from app.storage import activities as store

log = logging.getLogger(__name__)

SOURCES = ("webhook", "backfill")


@dataclass(frozen=True)
class IngestResult:
    """What happened to one delivery."""

    id: int
    duplicate: bool
    activity_type: str | None = None


def _dig(payload: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = payload
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _first_int(*values: Any) -> int | None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def activity_row(payload: dict[str, Any], raw: bytes, source: str, now: float) -> dict[str, Any]:
    """The stored columns for a validated payload.

    Organization and location come from the expanded device when present, and
    from the expanded organization/location objects otherwise.
    """
    device: dict[str, Any] = payload.get("device") or {}
    refs: dict[str, Any] = device.get("references") or {}
    return {
        "id": payload["id"],
        "activity_time": payload.get("activityTime"),
        "device_id": _first_int(payload.get("deviceId"), device.get("id")),
        "organization_id": _first_int(
            device.get("organizationId"),
            _dig(refs, ("organization", "id")),
            _dig(payload, ("organization", "id")),
        ),
        "location_id": _first_int(
            device.get("locationId"),
            _dig(refs, ("location", "id")),
            _dig(payload, ("location", "id")),
        ),
        "activity_type": payload.get("activityType"),
        "status_code": payload.get("statusCode"),
        "severity": payload.get("severity"),
        "priority": payload.get("priority"),
        "activity_result": payload.get("activityResult"),
        "series_uid": payload.get("seriesUid"),
        "source_config_uid": payload.get("sourceConfigUid"),
        "source_name": payload.get("sourceName"),
        "user_id": payload.get("userId"),
        "message": payload.get("message"),
        "subject": payload.get("subject"),
        "source": source,
        "received_at": now,
        "raw": raw,
    }


def unknown_values(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, value) for every open-enum value that webhook.yaml does not list."""
    found = []
    for path, known in KNOWN_VALUES.items():
        value = _dig(payload, path)
        if isinstance(value, str) and value not in known:
            found.append((".".join(path), value))
    return found


def store_in_transaction(
    state: AppState,
    conn: Connection,
    raw: bytes,
    payload: dict[str, Any],
    source: str,
    now: float,
) -> tuple[IngestResult, list[tuple[str, str]]]:
    """Store one validated activity and run the hooks, inside the caller's transaction.

    Returns the result and the unknown enum values of a new activity (counted here;
    log them with :func:`log_drift_once` once the transaction has committed).
    """
    row = activity_row(payload, raw, source, now)
    new = store.insert_activity(conn, row)
    drift: list[tuple[str, str]] = []
    if new:
        stored = StoredActivity(id=row["id"], source=source, received_at=now, row=row)
        for hook in state.new_activity_hooks:
            hook(conn, payload, stored)
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
    with state.drift_lock:
        fresh = [d for d in drift if d not in state.drift_logged]
        state.drift_logged.update(fresh)
    for field, value in fresh:
        log.warning(
            "spec drift: %s=%r is not a known value in webhook.yaml; stored anyway. "
            "Add it to the x-extensible-enum list and run `make regenerate`.",
            field,
            value,
        )


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
