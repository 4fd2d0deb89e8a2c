"""Handlers for alerts derived from CONDITION activities."""

from __future__ import annotations

from typing import Any

from connexion import problem

from app.alerts import service as alerts
from app.silences import operator
from app.storage.alerts import AlertFilter
from app.web.context import JSON, app_state, decode_cursor


def list_alerts(
    state: str = "open",
    organization_id: int | None = None,
    device_id: int | None = None,
    severity: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A page of alerts, most recently active first."""
    flt = AlertFilter(
        state=state, organization_id=organization_id, device_id=device_id, severity=severity
    )
    page = alerts.alert_page(app_state(), flt, limit=limit, before_id=decode_cursor(cursor))
    return page, 200, JSON


def get_alert(key: str) -> Any:
    """One alert with its activity history."""
    detail = operator.alert_with_actions(app_state(), key)
    if detail is None:
        return problem(404, "Not Found", f"no alert with key {key!r}")
    return detail, 200, JSON
