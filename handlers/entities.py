"""Handlers for the entity cache's read API."""

from __future__ import annotations

from typing import Any

from connexion import problem

from app.entities import service as entities
from app.web.context import JSON, app_state, decode_cursor


def list_devices(
    organization_id: int | None = None,
    location_id: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Cached devices by id, with organization and location names."""
    page = entities.device_page(
        app_state(),
        limit=limit,
        after_id=decode_cursor(cursor, bits=32),
        organization_id=organization_id,
        location_id=location_id,
    )
    return page, 200, JSON


def get_device(id_: int) -> Any:
    """One cached device."""
    record = entities.device_detail(app_state(), id_)
    if record is None:
        return problem(404, "Not Found", f"no device with id {id_} is cached")
    return record, 200, JSON


def list_organizations(
    limit: int = 50, cursor: str | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Cached organizations by id."""
    page = entities.organization_page(
        app_state(), limit=limit, after_id=decode_cursor(cursor, bits=32)
    )
    return page, 200, JSON


def list_locations(
    organization_id: int | None = None, limit: int = 50, cursor: str | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Cached locations by id."""
    page = entities.location_page(
        app_state(),
        limit=limit,
        after_id=decode_cursor(cursor, bits=32),
        organization_id=organization_id,
    )
    return page, 200, JSON
