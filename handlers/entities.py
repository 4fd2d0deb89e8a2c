"""Handlers for entities: generated stubs until implemented."""

from __future__ import annotations

from typing import Any


def list_devices(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], int]:
    """Not implemented yet: generated from webhook.yaml (handlers.entities.list_devices)."""
    detail = "handlers.entities.list_devices is described in webhook.yaml but has no handler yet."
    return {"title": "Not Implemented", "status": 501, "detail": detail}, 501


def get_device(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], int]:
    """Not implemented yet: generated from webhook.yaml (handlers.entities.get_device)."""
    detail = "handlers.entities.get_device is described in webhook.yaml but has no handler yet."
    return {"title": "Not Implemented", "status": 501, "detail": detail}, 501


def list_organizations(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], int]:
    """Not implemented yet: generated from webhook.yaml (handlers.entities.list_organizations)."""
    detail = (
        "handlers.entities.list_organizations is described in webhook.yaml but has no handler yet."
    )
    return {"title": "Not Implemented", "status": 501, "detail": detail}, 501


def list_locations(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], int]:
    """Not implemented yet: generated from webhook.yaml (handlers.entities.list_locations)."""
    detail = "handlers.entities.list_locations is described in webhook.yaml but has no handler yet."
    return {"title": "Not Implemented", "status": 501, "detail": detail}, 501
