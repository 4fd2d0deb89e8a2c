"""The read API's answers, as plain dicts shaped like webhook.yaml's schemas."""

from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy.engine import Row

from app.paging import page_of
from app.state import AppState
from app.storage import activities as store
from app.storage import rejected as rejected_store
from app.timeparse import iso


def finite(value: Any) -> Any:
    """``value``, or None for a float JSON cannot carry (an infinity or NaN stored before
    ingest refused them): every answer stays valid JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _literal(text: str) -> Any:
    # A number literal beyond a double's range (refused at ingest since; older rows may
    # hold one) is answered as the literal itself, a string, rather than as Infinity.
    number = float(text)
    return number if math.isfinite(number) else text


def stored_payload(raw: bytes) -> Any:
    """The stored raw body parsed for an answer (always representable as JSON)."""
    return json.loads(bytes(raw), parse_float=_literal, parse_constant=lambda name: name)


# The long texts of an ActivityRecord that lists show as previews.
PREVIEWED = ("message", "subject")


def list_preview(state: AppState) -> store.Preview:
    """How much of each long value lists and the dashboard read (the settings)."""
    return store.Preview(
        chars=state.config.preview_chars, payload_bytes=state.config.list_payload_bytes
    )


def cut(text: str | None, chars: int | None) -> tuple[str | None, bool]:
    """``text`` as a list shows it (its first ``chars`` characters) and whether it was cut.

    The storage layer reads one character more than ``chars``, so that a cut text can be
    told from one of exactly ``chars`` characters.
    """
    if text is None or chars is None or len(text) <= chars:
        return text, False
    return text[:chars], True


def activity_record(row: Row[Any], preview: store.Preview | None = None) -> dict[str, Any]:
    """An ActivityRecord from a row of :func:`app.storage.activities.list_activities`.

    A row read with ``preview`` gives a list item: message and subject are previews,
    and payload is null when the body received is longer than the preview allows;
    ``truncated`` then says so (the item's own endpoint has the whole).
    """
    data = row._mapping
    record = {name: finite(data.get(name)) for name in store.ACTIVITY_COLUMNS}
    record["receivedAt"] = iso(data["receivedAt"])
    for name in ("deviceName", "organizationName", "locationName"):
        record[name] = data.get(name)
    truncated = False
    for name in PREVIEWED:
        record[name], was_cut = cut(record[name], None if preview is None else preview.chars)
        truncated = truncated or was_cut
    raw = data["raw"]
    record["payload"] = None if raw is None else stored_payload(raw)
    record["truncated"] = truncated or raw is None
    return record


def activity_page(
    state: AppState, flt: store.ActivityFilter, *, limit: int, before_id: int | None
) -> dict[str, Any]:
    """One page of activities, newest first, with the cursor of the next page; long
    values are previews (:func:`list_preview`), cut in SQL."""
    preview = list_preview(state)
    with state.db.connect() as conn:
        rows = store.list_activities(
            conn, flt, limit=limit + 1, before_id=before_id, preview=preview
        )
    return page_of(rows, limit, lambda row: activity_record(row, preview), "id")


def activity_detail(state: AppState, activity_id: int) -> dict[str, Any] | None:
    """One activity's record with its original payload, or None."""
    with state.db.connect() as conn:
        row = store.get_activity_record(conn, activity_id)
    return None if row is None else activity_record(row)


def activity_raw(state: AppState, activity_id: int) -> bytes | None:
    """The exact bytes received for an activity, or None."""
    with state.db.connect() as conn:
        return store.get_activity_raw(conn, activity_id)


def rejected_record(row: Row[Any], preview: int | None = None) -> dict[str, Any]:
    """A RejectedDelivery from a stored row.

    A row read with ``preview`` (bytes) gives a list item whose body is a preview,
    ``bodyTruncated`` when it was cut; ``truncated`` says whether the body was cut when
    it was stored. GET /rejected/{id} has the whole stored body.
    """
    body = bytes(row.body)
    body_cut = preview is not None and len(body) > preview
    if body_cut:
        body = body[:preview]
    return {
        "id": row.id,
        "receivedAt": iso(row.received_at),
        "reason": row.reason,
        "field": row.field,
        "contentType": row.content_type,
        "body": body.decode("utf-8", "replace"),
        "bodyBytes": row.body_bytes,
        "truncated": bool(row.truncated),
        "bodyTruncated": body_cut,
    }


def rejected_page(state: AppState, *, limit: int, before_id: int | None) -> dict[str, Any]:
    """One page of rejected deliveries, newest first, bodies as previews (cut in SQL)."""
    preview = state.config.preview_chars
    with state.db.connect() as conn:
        rows = rejected_store.list_rejected(
            conn, limit=limit + 1, before_id=before_id, preview=preview
        )
    return page_of(rows, limit, lambda row: rejected_record(row, preview), "id")


def rejected_detail(state: AppState, rejected_id: int) -> dict[str, Any] | None:
    """One rejected delivery with its whole stored body, or None."""
    with state.db.connect() as conn:
        row = rejected_store.get_rejected(conn, rejected_id)
    return None if row is None else rejected_record(row)


def rejected_totals(state: AppState) -> dict[str, int]:
    """How many rejected deliveries are kept, and how many were dropped to keep within
    NINJAHOOK_REJECTED_MAX_ROWS / NINJAHOOK_REJECTED_MAX_BYTES."""
    with state.db.connect() as conn:
        rows = rejected_store.count_rows(conn)
        dropped = rejected_store.dropped_count(conn)
    return {"rows": rows, "dropped": dropped}


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
