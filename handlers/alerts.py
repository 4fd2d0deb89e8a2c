"""Handlers for alerts: generated stubs until implemented."""

from __future__ import annotations

from typing import Any


def list_alerts(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], int]:
    """Not implemented yet: generated from webhook.yaml (handlers.alerts.list_alerts)."""
    detail = "handlers.alerts.list_alerts is described in webhook.yaml but has no handler yet."
    return {"title": "Not Implemented", "status": 501, "detail": detail}, 501


def get_alert(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], int]:
    """Not implemented yet: generated from webhook.yaml (handlers.alerts.get_alert)."""
    detail = "handlers.alerts.get_alert is described in webhook.yaml but has no handler yet."
    return {"title": "Not Implemented", "status": 501, "detail": detail}, 501
