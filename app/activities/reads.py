"""The read API's answers, as plain dicts shaped like webhook.yaml's schemas."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import Row

from app.paging import page_of
from app.state import AppState
from app.storage import activities as store
from app.timeparse import iso


def activity_record(row: Row[Any]) -> dict[str, Any]:
    """An ActivityRecord from a row of :func:`app.storage.activities.list_activities`."""
    data = row._mapping
    record = {name: data.get(name) for name in store.ACTIVITY_COLUMNS}
    record["receivedAt"] = iso(data["receivedAt"])
    for name in ("deviceName", "organizationName", "locationName"):
        record[name] = data.get(name)
    record["payload"] = json.loads(bytes(data["raw"]))
    return record


def activity_page(
    state: AppState, flt: store.ActivityFilter, *, limit: int, before_id: int | None
) -> dict[str, Any]:
    """One page of activities, newest first, with the cursor of the next page."""
    with state.db.connect() as conn:
        rows = store.list_activities(conn, flt, limit=limit + 1, before_id=before_id)
    return page_of(rows, limit, activity_record, "id")


def activity_detail(state: AppState, activity_id: int) -> dict[str, Any] | None:
    """One activity's record with its original payload, or None."""
    with state.db.connect() as conn:
        row = store.get_activity_record(conn, activity_id)
    return None if row is None else activity_record(row)


def activity_raw(state: AppState, activity_id: int) -> bytes | None:
    """The exact bytes received for an activity, or None."""
    with state.db.connect() as conn:
        return store.get_activity_raw(conn, activity_id)


def rejected_record(row: Row[Any]) -> dict[str, Any]:
    """A RejectedDelivery from a stored row."""
    return {
        "id": row.id,
        "receivedAt": iso(row.received_at),
        "reason": row.reason,
        "field": row.field,
        "contentType": row.content_type,
        "body": bytes(row.body).decode("utf-8", "replace"),
        "bodyBytes": row.body_bytes,
        "truncated": bool(row.truncated),
    }


def rejected_page(state: AppState, *, limit: int, before_id: int | None) -> dict[str, Any]:
    """One page of rejected deliveries, newest first."""
    with state.db.connect() as conn:
        rows = store.list_rejected(conn, limit=limit + 1, before_id=before_id)
    return page_of(rows, limit, rejected_record, "id")


def spec_drift(state: AppState) -> list[dict[str, Any]]:
    """Every unknown enum value seen, with counts."""
    with state.db.connect() as conn:
        rows = store.list_spec_drift(conn)
    return [
        {
            "field": r.field,
            "value": r.value,
            "count": r.count,
            "firstSeen": iso(r.first_seen),
            "lastSeen": iso(r.last_seen),
        }
        for r in rows
    ]
