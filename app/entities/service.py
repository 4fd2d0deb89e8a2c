"""The entity cache: kept fresh by every delivery, read by the API.

:func:`cache_updater` makes the pipeline stage that writes the expanded device,
its ``references`` and any expanded organization or location of each new activity
into the cache, in the ingest transaction. The data is as of the activity's
``activityTime``; it replaces cached data only when that is newer, so a
backfilled or late delivery never rolls the cache back.

With NinjaOne credentials the stage also notes, in a :class:`CacheNeeds`, what the
cache lacks (a device it has not seen, delivered without expansion) and what
NinjaOne says changed (SYSTEM change events such as ``NODE_UPDATED``); the notes are
handed over when the delivery commits, and :mod:`app.ninjaone.refresh` fetches them
in the background. On the ingest path this costs a set lookup per activity.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
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


# SYSTEM statusCodes that say an entity changed (all in tests/reference/ninjaone-enums.json).
# A device event names its device (deviceId); an organization or location event may not
# name its entity, so it refreshes that kind's whole list.
DEVICE_REFRESH_EVENTS = frozenset(
    {
        "NODE_CREATED",
        "NODE_UPDATED",
        "NODE_RE_ENROLLED",
        "NODE_IDENTIFICATION_UPDATED",
        "NODE_MANUALLY_APPROVED",
        "NODE_AUTOMATICALLY_APPROVED",
    }
)
# A rejected device is not managed (NinjaOne answers 404 for it): marked deleted, as a
# deleted one and a rejected one deleted (REJECTED_NODE_DELETED) are.
DEVICE_DELETE_EVENTS = frozenset(
    {
        "NODE_DELETED",
        "NODE_REGISTRATION_REJECTED",
        "NODE_MANUALLY_REJECTED",
        "NODE_AUTOMATICALLY_REJECTED",
        "REJECTED_NODE_DELETED",
    }
)
ORGANIZATION_EVENTS = frozenset({"CLIENT_CREATED", "CLIENT_UPDATED", "CLIENT_DELETED"})
LOCATION_EVENTS = frozenset({"LOCATION_CREATED", "LOCATION_UPDATED", "LOCATION_DELETED"})
CHANGE_EVENTS = DEVICE_REFRESH_EVENTS | DEVICE_DELETE_EVENTS | ORGANIZATION_EVENTS | LOCATION_EVENTS


@dataclass(frozen=True)
class Need:
    """One thing the cache needs from NinjaOne.

    ``action``: ``miss`` (fetch the device unless it is cached), ``refresh`` (fetch it:
    an event said it changed), ``delete`` (an event said it is gone; ``at`` is the
    activity's time) or ``list`` (refresh every organization or location: an event
    named none). ``kind``: ``device``, ``organization`` or ``location``; ``id`` is None
    for ``list``.
    """

    action: str
    kind: str
    id: int | None
    at: float = 0.0


class CacheNeeds:
    """What this process's deliveries found the cache lacking, handed to the refresher.

    Bounded: ``known`` (ids this process has seen cached or has noted, so that the next
    activity for the same device costs one set lookup) holds at most ``known_capacity`` ids and is
    emptied when full (the refresher checks the database again, cheaply); the queue
    holds at most ``capacity`` needs and drops the rest (the periodic sync and the next
    activity of that device catch up). Notes made in a transaction reach the queue
    when it commits, so nothing is fetched for a delivery that was rolled back.
    """

    def __init__(self, capacity: int = 10_000, known_capacity: int = 200_000) -> None:
        self.capacity = capacity
        self.known_capacity = known_capacity
        self.known: set[int] = set()
        self._queue: OrderedDict[tuple[str, str, int | None], Need] = OrderedDict()
        self._lock = threading.Lock()
        self.dropped = 0
        # Called (outside the lock) after needs were queued: the refresher wakes up.
        self.on_queued: Callable[[], None] | None = None
        self._pending = ("ninjahook.entities.needs", id(self))

    def attach(self, engine: Engine) -> None:
        """Hand notes over when their transaction commits; forget them on rollback. (The
        commit hook runs just before the DBAPI commit and takes the notes with it, so a
        failed COMMIT leaves nothing behind for the connection's next transaction.)"""
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._discard)

    def note(self, conn: Connection, need: Need) -> None:
        """Remember ``need`` until ``conn``'s transaction commits."""
        conn.info.setdefault(self._pending, []).append(need)

    def add(self, needs: list[Need]) -> None:
        """Queue ``needs`` now (one per action, kind and id); wake the refresher."""
        with self._lock:
            for need in needs:
                key = (need.action, need.kind, need.id)
                if key in self._queue:
                    continue
                if len(self._queue) >= self.capacity:
                    self.dropped += 1
                    continue
                self._queue[key] = need
        callback = self.on_queued
        if callback is not None:
            callback()

    def take(self, limit: int = 100) -> list[Need]:
        """Up to ``limit`` queued needs, oldest first."""
        with self._lock:
            taken: list[Need] = []
            while self._queue and len(taken) < limit:
                taken.append(self._queue.popitem(last=False)[1])
            return taken

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def remember(self, device_id: int) -> None:
        """``device_id`` is cached: its next activities need nothing."""
        if len(self.known) >= self.known_capacity:
            self.known.clear()
        self.known.add(device_id)

    def forget(self, device_id: int) -> None:
        self.known.discard(device_id)

    def _commit(self, conn: Connection) -> None:
        needs = conn.info.pop(self._pending, None)
        if needs:
            self.add(needs)

    def _discard(self, conn: Connection) -> None:
        needs = conn.info.pop(self._pending, None)
        for need in needs or ():
            if need.action == "miss" and need.id is not None:
                self.known.discard(need.id)  # noted in vain: note it again next time


def _note_needs(
    conn: Connection, needs: CacheNeeds, payload: dict[str, Any], stored: StoredActivity
) -> None:
    """Note what the cache lacks or what NinjaOne says changed (no database work)."""
    device_id = stored.row.get("device_id")
    status = payload.get("statusCode")
    if (
        isinstance(status, str)
        and status in CHANGE_EVENTS
        and payload.get("activityType") == "SYSTEM"
    ):
        activity_time = payload.get("activityTime")
        at = float(activity_time) if isinstance(activity_time, int | float) else stored.received_at
        if status in ORGANIZATION_EVENTS:
            needs.note(conn, Need("list", "organization", None, at))
            if status == "CLIENT_DELETED":
                # Its locations went with it.
                needs.note(conn, Need("list", "location", None, at))
        elif status in LOCATION_EVENTS:
            needs.note(conn, Need("list", "location", None, at))
        elif isinstance(device_id, int):
            if status in DEVICE_DELETE_EVENTS:
                needs.note(conn, Need("delete", "device", device_id, at))
            elif not isinstance(payload.get("device"), dict):
                # An expanded copy is as new as the event: the stage has just written it.
                needs.note(conn, Need("refresh", "device", device_id, at))
        return
    if (
        isinstance(device_id, int)
        and device_id not in needs.known
        and not isinstance(payload.get("device"), dict)
    ):
        # Known from now on: the device's next activities cost a set lookup while the
        # refresher fetches it (it forgets the id again when NinjaOne has none).
        needs.remember(device_id)
        needs.note(conn, Need("miss", "device", device_id, stored.received_at))


def _write(
    conn: Connection,
    written: WrittenEntities,
    table: Table,
    rows: list[dict[str, Any]],
    stamps: dict[str, Any],
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
    written: WrittenEntities, needs: CacheNeeds | None = None
) -> Callable[[Connection, dict[str, Any], StoredActivity], None]:
    """The ingest hook, remembering committed writes in ``written`` and, when ``needs``
    is given (NinjaOne credentials are set), noting what the cache lacks in it."""

    def update_cache_from_activity(
        conn: Connection, payload: dict[str, Any], stored: StoredActivity
    ) -> None:
        """The ingest hook: cache what the payload expands, as of its ``activityTime``."""
        if needs is not None:
            _note_needs(conn, needs, payload, stored)
        device = payload.get("device")
        org, loc = payload.get("organization"), payload.get("location")
        if not isinstance(device, dict) and org is None and loc is None:
            return  # nothing expanded: nothing to cache (the common UI-channel shape)
        activity_time = payload.get("activityTime")
        observed = (
            float(activity_time) if isinstance(activity_time, int | float) else stored.received_at
        )
        stamps = {
            "observed_at": observed,
            "updated_at": stored.received_at,
            "refreshed_at": stored.received_at,
            "refreshed_by": "webhook",
        }
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


def _state(row: Row[Any]) -> dict[str, Any]:
    """Whether NinjaOne deleted the entity, and when and how the row was last refreshed."""
    return {
        "deleted": row.deleted_at is not None,
        "deletedAt": None if row.deleted_at is None else iso(row.deleted_at),
        "refreshedAt": None if row.refreshed_at is None else iso(row.refreshed_at),
        "refreshedBy": row.refreshed_by,
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
        **_state(row),
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
        **_state(row),
        "raw": row.raw or {},
    }


def location_record(row: Row[Any]) -> dict[str, Any]:
    """A CachedLocation."""
    return {
        "id": row.id,
        "name": row.name,
        "organizationId": row.organization_id,
        "updatedAt": iso(row.updated_at),
        **_state(row),
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
