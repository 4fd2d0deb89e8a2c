"""Handlers for the read API over stored activities."""

from __future__ import annotations

from typing import Any

from connexion import problem
from flask import Response, request

from app.activities import export, reads
from app.storage.activities import ActivityFilter
from app.web.context import JSON, app_state, decode_cursor, parse_time
from app.web.streaming import client_gone


def _activity_filter(
    device_id: int | None,
    organization_id: int | None,
    location_id: int | None,
    activity_type: str | None,
    status_code: str | None,
    severity: str | None,
    series_uid: str | None,
    source_name: str | None,
    q: str | None,
    since: str | None,
    until: str | None,
) -> ActivityFilter:
    """The filter that GET /activities and GET /activities/export share."""
    return ActivityFilter(
        device_id=device_id,
        organization_id=organization_id,
        location_id=location_id,
        activity_type=activity_type,
        status_code=status_code,
        severity=severity,
        series_uid=series_uid,
        source_name=source_name,
        text=q or None,
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
    )


def list_activities(
    device_id: int | None = None,
    organization_id: int | None = None,
    location_id: int | None = None,
    activity_type: str | None = None,
    status_code: str | None = None,
    severity: str | None = None,
    series_uid: str | None = None,
    source_name: str | None = None,
    q: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A page of activities, newest first."""
    flt = _activity_filter(
        device_id,
        organization_id,
        location_id,
        activity_type,
        status_code,
        severity,
        series_uid,
        source_name,
        q,
        since,
        until,
    )
    return (
        reads.activity_page(app_state(), flt, limit=limit, before_id=decode_cursor(cursor)),
        200,
        JSON,
    )


def _not_found(activity_id: int) -> Any:
    return problem(404, "Not Found", f"no activity with id {activity_id} is stored")


def get_activity(id_: int) -> Any:
    """One activity with its payload."""
    record = reads.activity_detail(app_state(), id_)
    return (record, 200, JSON) if record is not None else _not_found(id_)


def get_activity_raw(id_: int) -> Any:
    """The exact bytes received."""
    raw = reads.activity_raw(app_state(), id_)
    if raw is None:
        return _not_found(id_)
    return Response(raw, status=200, mimetype="application/json")


def list_rejected(
    limit: int = 50, cursor: str | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Rejected deliveries, newest first."""
    return (
        reads.rejected_page(app_state(), limit=limit, before_id=decode_cursor(cursor, bits=32)),
        200,
        JSON,
    )


def get_rejected(id_: int) -> Any:
    """One rejected delivery with its whole stored body."""
    record = reads.rejected_detail(app_state(), id_)
    if record is None:
        return problem(404, "Not Found", f"no rejected delivery with id {id_} is kept")
    return record, 200, JSON


def list_spec_drift() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Unknown enum values seen."""
    return {"items": reads.spec_drift(app_state())}, 200, JSON


def export_activities(
    format_: str = "jsonl",
    device_id: int | None = None,
    organization_id: int | None = None,
    location_id: int | None = None,
    activity_type: str | None = None,
    status_code: str | None = None,
    severity: str | None = None,
    series_uid: str | None = None,
    source_name: str | None = None,
    q: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """Every matching activity, streamed as JSON Lines or CSV (oldest id first)."""
    flt = _activity_filter(
        device_id,
        organization_id,
        location_id,
        activity_type,
        status_code,
        severity,
        series_uid,
        source_name,
        q,
        since,
        until,
    )
    chunks = export.stream(app_state().db, flt, format_, stop=client_gone(request.environ))
    return Response(chunks, status=200, mimetype=export.FORMATS[format_])
