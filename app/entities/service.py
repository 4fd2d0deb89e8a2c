"""The entity cache: kept fresh by every delivery, read by the API.

:func:`cache_updater` makes the pipeline stage that writes the expanded device,
its ``references`` and any expanded organization or location of each new activity
into the cache, in the ingest transaction. The data is as of the activity's
``activityTime``; it replaces cached data only when that is newer, so a
backfilled or late delivery never rolls the cache back.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.engine import Connection, Engine, ExceptionContext, Row

from app.ingest.payload import as_int, as_str, has_id
from app.ingest.pipeline import StoredActivity
from app.paging import page_of
from app.state import AppState
from app.storage import entities as store
from app.storage.tables import devices, locations, organizations
from app.timeparse import iso

log = logging.getLogger(__name__)


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


def organization_row(org: dict[str, Any], *, full: bool) -> dict[str, Any]:
    """Cache columns from an API organization; ``full`` when it is the whole object
    (sync, an expanded organization), not a name-only reference."""
    row: dict[str, Any] = {"id": org["id"], "name": as_str(org.get("name"))}
    if full:
        row.update(description=as_str(org.get("description")), raw=org)
    elif "description" in org:
        row["description"] = as_str(org.get("description"))
    return row


def location_row(
    loc: dict[str, Any], *, full: bool, organization_id: int | None = None
) -> dict[str, Any]:
    """Cache columns from an API location (or a reference to one)."""
    row: dict[str, Any] = {"id": loc["id"], "name": as_str(loc.get("name"))}
    org_id = as_int(loc.get("organizationId")) or organization_id
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
                value = as_int(value)
            else:
                value = as_str(value)
            row[column] = value
    row["raw"] = {k: v for k, v in device.items() if k != "references"}
    return row


class WrittenEntities:
    """What this process committed to the entity cache lately, to skip repeating it.

    A bounded LRU keyed by (table, id) holding the columns written (without the
    stamps) and their ``observed_at``. A write is skipped only when the same columns
    were committed at an equal or newer ``observed_at``: the guarded upsert would
    then change nothing. Entries enter the LRU only when their transaction commits
    (and leave it again if that commit fails), so a rolled-back delivery is written
    again when it is redelivered. Another process may have written newer data since;
    that only makes the skipped write a no-op too. Correctness never depends on the
    LRU: a miss just runs the guarded upsert.
    """

    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, int], tuple[dict[str, Any], float]] = OrderedDict()
        self._lock = threading.Lock()
        # Keys of this instance's data in ``Connection.info`` (one engine may be
        # followed by more than one instance).
        self._pending = ("ninjahook.entities.pending", id(self))
        self._promoted = ("ninjahook.entities.promoted", id(self))

    def attach(self, engine: Engine) -> None:
        """Follow the transactions of ``engine``'s connections."""
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)
        # A failed COMMIT fires no "rollback" event, only "handle_error".
        event.listen(engine, "handle_error", self._error)

    def is_current(self, key: tuple[str, int], columns: dict[str, Any], observed: float) -> bool:
        """True when ``columns`` were committed for ``key`` at ``observed`` or later."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            self._entries.move_to_end(key)
        return entry[1] >= observed and entry[0] == columns

    def stage(
        self, conn: Connection, key: tuple[str, int], columns: dict[str, Any], observed: float
    ) -> None:
        """Remember a write of this transaction, to enter the LRU when it commits."""
        conn.info.setdefault(self._pending, []).append((key, columns, observed))

    def _begin(self, conn: Connection) -> None:
        conn.info.pop(self._pending, None)
        conn.info.pop(self._promoted, None)

    def _commit(self, conn: Connection) -> None:
        # Runs just before the DBAPI commit; _error undoes this if the commit fails.
        pending = conn.info.pop(self._pending, None)
        if not pending:
            return
        with self._lock:
            for key, columns, observed in pending:
                self._entries[key] = (columns, observed)
                self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        conn.info[self._promoted] = [key for key, _, _ in pending]

    def _error(self, context: ExceptionContext) -> None:
        if context.connection is not None:
            self._rollback(context.connection)

    def _rollback(self, conn: Connection) -> None:
        conn.info.pop(self._pending, None)
        promoted = conn.info.pop(self._promoted, None)
        if promoted:
            with self._lock:
                for key in promoted:
                    self._entries.pop(key, None)


def _write(
    conn: Connection,
    written: WrittenEntities,
    table: Table,
    rows: list[dict[str, Any]],
    stamps: dict[str, float],
) -> None:
    observed = stamps["observed_at"]
    fresh = []
    for row in rows:
        key = (table.name, row["id"])
        if written.is_current(key, row, observed):
            continue
        written.stage(conn, key, row, observed)
        fresh.append({**row, **stamps})
    if fresh:
        store.upsert_rows_if_newer(conn, table, fresh)


def _one_per_id(*candidates: dict[str, Any] | None) -> list[dict[str, Any]]:
    # The first candidate for an id wins: the full object before the name-only
    # reference. Both carry the same observed_at, so the guarded upsert would have
    # kept the first one's columns anyway and skipped the second.
    rows: dict[int, dict[str, Any]] = {}
    for row in candidates:
        if row is not None:
            rows.setdefault(row["id"], row)
    return list(rows.values())


def cache_updater(
    written: WrittenEntities,
) -> Callable[[Connection, dict[str, Any], StoredActivity], None]:
    """The ingest hook, remembering committed writes in ``written``."""

    def update_cache_from_activity(
        conn: Connection, payload: dict[str, Any], stored: StoredActivity
    ) -> None:
        """The ingest hook: cache what the payload expands, as of its ``activityTime``."""
        device = payload.get("device")
        org, loc = payload.get("organization"), payload.get("location")
        if not isinstance(device, dict) and org is None and loc is None:
            return  # nothing expanded: nothing to cache (the common UI-channel shape)
        activity_time = payload.get("activityTime")
        observed = (
            float(activity_time) if isinstance(activity_time, int | float) else stored.received_at
        )
        stamps = {"observed_at": observed, "updated_at": stored.received_at}
        refs = device.get("references") if isinstance(device, dict) else None
        refs = refs if isinstance(refs, dict) else {}
        device_org = as_int(device.get("organizationId")) if isinstance(device, dict) else None
        ref_org, ref_loc = refs.get("organization"), refs.get("location")

        # Organizations, then locations, then devices: one order for every writer, so
        # concurrent ingests on PostgreSQL never wait on each other in a cycle.
        orgs = _one_per_id(
            organization_row(org, full=True) if has_id(org) else None,
            organization_row(ref_org, full=False) if has_id(ref_org) else None,
        )
        if orgs:
            _write(conn, written, organizations, orgs, stamps)
        locs = _one_per_id(
            location_row(loc, full=True, organization_id=device_org) if has_id(loc) else None,
            location_row(ref_loc, full=False, organization_id=device_org)
            if has_id(ref_loc)
            else None,
        )
        if locs:
            _write(conn, written, locations, locs, stamps)
        if has_id(device):
            _write(conn, written, devices, [device_row(device)], stamps)

    # Named like a module-level function in profiles and benchmark tables.
    update_cache_from_activity.__qualname__ = "update_cache_from_activity"
    return update_cache_from_activity


# --- reads ----------------------------------------------------------------------------


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
    return page_of(rows, limit, device_record, "id")


def device_detail(state: AppState, device_id: int) -> dict[str, Any] | None:
    """One cached device, or None."""
    with state.db.connect() as conn:
        row = store.get_device(conn, device_id)
    return None if row is None else device_record(row)


def organization_record(row: Row[Any]) -> dict[str, Any]:
    """A CachedOrganization."""
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "updatedAt": iso(row.updated_at),
        "raw": row.raw or {},
    }


def location_record(row: Row[Any]) -> dict[str, Any]:
    """A CachedLocation."""
    return {
        "id": row.id,
        "name": row.name,
        "organizationId": row.organization_id,
        "updatedAt": iso(row.updated_at),
        "raw": row.raw or {},
    }


def organization_page(state: AppState, *, limit: int, after_id: int | None) -> dict[str, Any]:
    """One page of cached organizations by id."""
    with state.db.connect() as conn:
        rows = store.list_organizations(conn, limit=limit + 1, after_id=after_id)
    return page_of(rows, limit, organization_record, "id")


def location_page(
    state: AppState, *, limit: int, after_id: int | None, organization_id: int | None
) -> dict[str, Any]:
    """One page of cached locations by id."""
    with state.db.connect() as conn:
        rows = store.list_locations(
            conn, limit=limit + 1, after_id=after_id, organization_id=organization_id
        )
    return page_of(rows, limit, location_record, "id")
