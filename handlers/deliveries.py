"""Handlers for routed deliveries and dead letters (read token)."""

from __future__ import annotations

from typing import Any

from connexion import problem

from app.notifications import reads
from app.storage.notifications import NotificationFilter
from app.web.context import JSON, app_state, decode_cursor, parse_time


def list_deliveries(
    status: str | None = None,
    route: str | None = None,
    destination: str | None = None,
    since: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A page of deliveries, newest first; ``status=dead`` gives the dead letters."""
    flt = NotificationFilter(
        since=parse_time(since, "since"),
        route=route,
        destination=destination,
        statuses=(status,) if status else None,
    )
    page = reads.notification_page(
        app_state(), flt, limit=limit, before_seq=decode_cursor(cursor, bits=32)
    )
    return page, 200, JSON


def list_activity_deliveries(id_: int) -> Any:
    """An activity's deliveries, oldest first; 404 when the activity is not stored."""
    items = reads.activity_notifications(app_state(), id_)
    if items is None:
        return problem(404, "Not Found", f"no activity with id {id_} is stored")
    return {"items": items}, 200, JSON
