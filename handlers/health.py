"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from app.web.context import JSON, app_state
from app.web.problems import storage_unavailable


def liveness() -> tuple[dict[str, Any], int, dict[str, str]]:
    """The process is up."""
    return {"status": "ok"}, 200, JSON


def readiness() -> Any:
    """Ready when the database answers a query."""
    if app_state().db.ping():
        return {"status": "ok", "database": "ok"}, 200, JSON
    return storage_unavailable()
