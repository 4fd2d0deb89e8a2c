"""The entity cache: kept fresh by every delivery, read by the API.

:func:`install` registers an ingest hook that writes the expanded device, its
``references`` and any expanded organization or location of each new activity
into the cache, in the ingest transaction. The data is as of the activity's
``activityTime``; it replaces cached data only when that is newer, so a
backfilled or late delivery never rolls the cache back. With
NINJAHOOK_BACKFILL_INTERVAL and NinjaOne credentials set, :func:`install` also
returns the periodic backfill task.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.engine import Connection, Row

from app.background import PeriodicTask
from app.state import AppState, StoredActivity
from app.storage import entities as store
from app.storage.tables import devices, locations, organizations
from app.web import encode_cursor, iso

log = logging.getLogger(__name__)

BACKFILL_TASK = "ninjaone-backfill"

# API field of an expanded device -> cache column.
_DEVICE_FIELDS = {
    "organizationId": "organization_id",
    "locationId": "location_id",
    "displayName": "display_name",
    "systemName": "system_name",
    "nodeClass": "node_class",
    "offline": "offline",
    "lastContact": "last_contact",
}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def organization_row(org: dict[str, Any], *, full: bool) -> dict[str, Any]:
    """Cache columns from an API organization; ``full`` when it is the whole object
    (sync, an expanded organization), not a name-only reference."""
    row: dict[str, Any] = {"id": org["id"], "name": _str(org.get("name"))}
    if full:
        row.update(description=_str(org.get("description")), raw=org)
    elif "description" in org:
        row["description"] = _str(org.get("description"))
    return row


def location_row(
    loc: dict[str, Any], *, full: bool, organization_id: int | None = None
) -> dict[str, Any]:
    """Cache columns from an API location (or a reference to one)."""
    row: dict[str, Any] = {"id": loc["id"], "name": _str(loc.get("name"))}
    org_id = _int(loc.get("organizationId")) or organization_id
    if org_id is not None:
        row["organization_id"] = org_id
    if full:
        row["raw"] = loc
    return row


def device_row(device: dict[str, Any]) -> dict[str, Any]:
    """Cache columns from an API device; ``raw`` keeps it without its expanded references."""
    row: dict[str, Any] = {"id": device["id"]}
    for field, column in _DEVICE_FIELDS.items():
        if field in device:
            value = device[field]
            if column == "offline":
                value = value if isinstance(value, bool) else None
            elif column == "last_contact":
                value = float(value) if isinstance(value, int | float) else None
            elif column.endswith("_id"):
                value = _int(value)
            else:
                value = _str(value)
            row[column] = value
    row["raw"] = {k: v for k, v in device.items() if k != "references"}
    return row


def _has_id(obj: dict[str, Any]) -> bool:
    return _int(obj.get("id")) is not None


def update_cache_from_activity(
    conn: Connection, payload: dict[str, Any], stored: StoredActivity
) -> None:
    """The ingest hook: cache what the payload expands, as of its ``activityTime``."""
    activity_time = payload.get("activityTime")
    observed = (
        float(activity_time) if isinstance(activity_time, int | float) else stored.received_at
    )
    stamps = {"observed_at": observed, "updated_at": stored.received_at}
    device = payload.get("device")
    refs = device.get("references") if isinstance(device, dict) else None
    refs = refs if isinstance(refs, dict) else {}
    device_org = _int(device.get("organizationId")) if isinstance(device, dict) else None

    # Organizations, then locations, then devices: one order for every writer, so
    # concurrent ingests on PostgreSQL never wait on each other in a cycle.
    for org, full in ((payload.get("organization"), True), (refs.get("organization"), False)):
        if isinstance(org, dict) and _has_id(org):
            store.upsert_if_newer(
                conn, organizations, {**organization_row(org, full=full), **stamps}
            )
    for loc, full in ((payload.get("location"), True), (refs.get("location"), False)):
        if isinstance(loc, dict) and _has_id(loc):
            row = location_row(loc, full=full, organization_id=device_org)
            store.upsert_if_newer(conn, locations, {**row, **stamps})
    if isinstance(device, dict) and _has_id(device):
        store.upsert_if_newer(conn, devices, {**device_row(device), **stamps})


def install(state: AppState) -> list[PeriodicTask]:
    """Register the cache hook; return the backfill task when it is enabled and configured."""
    state.new_activity_hooks.append(update_cache_from_activity)
    from app import ninjaone

    interval = int(state.config.backfill_interval or 0)
    if interval <= 0:
        return []
    if not ninjaone.credentials_configured(state.config):
        log.warning(
            "NINJAHOOK_BACKFILL_INTERVAL is set but NINJAONE_CLIENT_ID/NINJAONE_CLIENT_SECRET "
            "are not: periodic backfill is off"
        )
        return []
    return [PeriodicTask(BACKFILL_TASK, float(interval), run_backfill)]


def run_backfill(state: AppState) -> None:
    """The periodic task: one backfill with the configured credentials, logged."""
    from app import ninjaone
    from app.sync import backfill

    started = time.monotonic()
    try:
        with ninjaone.NinjaOneClient.from_config(state.config) as client:
            result = backfill(state, client)
    except ninjaone.NinjaOneError as exc:
        log.warning("backfill failed: %s", exc)
        return
    log.info(
        "backfill: %d fetched, %d new, %d already stored (%.1fs)",
        result.fetched,
        result.new,
        result.present,
        time.monotonic() - started,
    )


# --- reads ----------------------------------------------------------------------------


def _page(items: list[dict[str, Any]], rows: list[Row[Any]], limit: int) -> dict[str, Any]:
    more = len(rows) > limit
    return {
        "items": items[:limit],
        "nextCursor": encode_cursor(items[limit - 1]["id"]) if more else None,
    }


def device_record(row: Row[Any]) -> dict[str, Any]:
    """A CachedDevice."""
    return {
        "id": row.id,
        "displayName": row.display_name,
        "systemName": row.system_name,
        "organizationId": row.organization_id,
        "organizationName": row.organization_name,
        "locationId": row.location_id,
        "locationName": row.location_name,
        "nodeClass": row.node_class,
        "offline": row.offline,
        "lastContact": row.last_contact,
        "updatedAt": iso(row.updated_at),
        "raw": row.raw or {},
    }


def device_page(
    state: AppState,
    *,
    limit: int,
    after_id: int | None,
    organization_id: int | None,
    location_id: int | None,
) -> dict[str, Any]:
    """One page of cached devices by id, with the cursor of the next page."""
    with state.db.connect() as conn:
        rows = store.list_devices(
            conn,
            limit=limit + 1,
            after_id=after_id,
            organization_id=organization_id,
            location_id=location_id,
        )
    return _page([device_record(r) for r in rows], rows, limit)


def device_detail(state: AppState, device_id: int) -> dict[str, Any] | None:
    """One cached device, or None."""
    with state.db.connect() as conn:
        row = store.get_device(conn, device_id)
    return None if row is None else device_record(row)


def organization_page(state: AppState, *, limit: int, after_id: int | None) -> dict[str, Any]:
    """One page of cached organizations by id."""
    with state.db.connect() as conn:
        rows = store.list_organizations(conn, limit=limit + 1, after_id=after_id)
    items = [
        {
            "id": r.id,
            "name": r.name,
            "description": r.description,
            "updatedAt": iso(r.updated_at),
            "raw": r.raw or {},
        }
        for r in rows
    ]
    return _page(items, rows, limit)


def location_page(
    state: AppState, *, limit: int, after_id: int | None, organization_id: int | None
) -> dict[str, Any]:
    """One page of cached locations by id."""
    with state.db.connect() as conn:
        rows = store.list_locations(
            conn, limit=limit + 1, after_id=after_id, organization_id=organization_id
        )
    items = [
        {
            "id": r.id,
            "name": r.name,
            "organizationId": r.organization_id,
            "updatedAt": iso(r.updated_at),
            "raw": r.raw or {},
        }
        for r in rows
    ]
    return _page(items, rows, limit)
