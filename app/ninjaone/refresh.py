"""Keeping the entity cache current in the background: misses, change events, lists.

The ingest stage (:func:`app.entities.service.cache_updater`) only notes what the cache
lacks in a :class:`~app.entities.service.CacheNeeds`, and only once the delivery has
committed; a :class:`CacheRefresher` thread of the same process takes those notes and
talks to NinjaOne, never inside an ingest transaction and never before the answer:

- ``miss``: a device the cache has not seen (checked in the database, then
  ``GET /v2/device/{id}``), and then its organization (``GET /v2/organization/{id}``)
  and that organization's locations (``GET /v2/organization/{id}/locations``) when
  those are not cached either. Rows are stamped ``refreshed_by = fetch``.
- ``refresh``: a device event (``NODE_UPDATED``…): fetch the device again (``event``);
  a 404 marks it deleted.
- ``delete``: ``NODE_DELETED`` or a rejection: mark the device deleted (kept, with its
  name).
- ``list``: an organization or location event names no id: that kind's whole list is
  refreshed, at most once per ``list_debounce`` seconds (a later request waits for
  the next slot rather than being lost).

One thread per process, so one fetch per entity in flight; an id NinjaOne answers 404
for (or that ``NODE_DELETED`` named) is not asked for again for ``missing_ttl`` seconds,
not even for a change event (an error: ``error_ttl``), so a storm of activities for a
vanished device costs one request. Requests are paced by the
process's shared rate limit (NINJAHOOK_NINJAONE_RATE). The thread starts on the first
note (in the serving process, after a fork) and ends after ``idle_exit`` idle seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

from app.entities.service import CacheNeeds, Need, device_row, location_row, organization_row
from app.metrics.service import ENTITY_FETCHES as FETCHES
from app.metrics.service import ENTITY_MISSES as MISSES
from app.ninjaone.client import NinjaOneClient, NinjaOneError
from app.ninjaone.sync import sync_entities
from app.state import AppState
from app.storage import entities as store
from app.storage.db import Database
from app.storage.tables import devices, locations, organizations

log = logging.getLogger(__name__)

_LIST_KINDS = {"organization": "organizations", "location": "locations"}
_TABLE_ORDER = {"organizations": 0, "locations": 1, "devices": 2}


class CacheRefresher:
    """Fetches what :class:`CacheNeeds` collected, on one background thread.

    :param client_factory: makes the NinjaOne client (default: from the settings, with
        the process's shared rate limit).
    """

    def __init__(
        self,
        state: AppState,
        needs: CacheNeeds,
        *,
        missing_ttl: float = 3600.0,
        error_ttl: float = 60.0,
        list_debounce: float = 30.0,
        idle_exit: float = 30.0,
        gather: float = 0.2,
        flush_interval: float = 1.0,
        max_remembered: int = 100_000,
        client_factory: Callable[[], NinjaOneClient] | None = None,
    ) -> None:
        self.state = state
        self.needs = needs
        self.missing_ttl = missing_ttl
        self.error_ttl = error_ttl
        self.list_debounce = list_debounce
        self.idle_exit = idle_exit
        self.gather = gather
        self.flush_interval = flush_interval
        # Buffered writes (table order, arrival, write) and the ids they cache.
        self._writes: list[tuple[int, int, Callable[[Connection], Any]]] = []
        self._buffered: dict[str, set[int]] = {}
        self._flushed = time.monotonic()
        self._db: Database | None = None
        self.max_remembered = max_remembered
        self.client_factory = client_factory or (lambda: NinjaOneClient.from_config(state.config))
        # (kind, id) -> monotonic time until which it is not asked for again.
        self.missing: dict[tuple[str, int], float] = {}
        # Organizations and locations known to be cached: a device of one of them needs
        # no database check (most fetched devices share a few organizations).
        self._parents: set[tuple[str, int]] = set()
        # kind -> monotonic time of the last list refresh / of the one requested.
        self._listed: dict[str, float] = {}
        self._list_due: dict[str, float] = {}
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopped = False
        needs.on_queued = self.wake
        event.listen(state.db.engine, "engine_disposed", lambda _engine: self.halt())

    @property
    def db(self) -> Database:
        """The refresher's own engine on the same database (made on first use, closed when
        the thread ends): its connections never enter the pool ingest draws from, so an
        ingest transaction keeps finding its warm connection (on SQLite, a connection
        another one wrote after has to reread its pages)."""
        if self._db is None:
            config = self.state.config
            self._db = Database(
                self.state.db.url,
                sqlite_synchronous=config.sqlite_synchronous,
                sqlite_writer_lock=config.sqlite_writer_lock,
            )
        return self._db

    # --- thread -------------------------------------------------------------------------

    def wake(self) -> None:
        """Work is queued: start the thread if this process has none, and wake it."""
        if self._wake.is_set() and self._thread is not None and self._pid == os.getpid():
            return  # already awake (the common case under load: one check, no lock)
        with self._lock:
            if self._stopped:
                return
            if self._thread is None or self._pid != os.getpid():
                if self._pid != os.getpid():
                    # A forked worker: the parent's thread and connections are not ours.
                    self._db = None
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._loop, name="ninjahook-cache-refresh", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the request in progress)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def halt(self) -> None:
        """End the running thread after its current request, without waiting for it; the
        next note starts a new one. Called when the app's database is disposed (its
        shutdown), so a stopped app leaves no thread fetching behind."""
        with self._lock:
            self._thread = None
        self._wake.set()

    def _loop(self) -> None:
        me = threading.current_thread()

        def live() -> bool:
            return not self._stopped and self._thread is me

        client: NinjaOneClient | None = None
        idle_since = time.monotonic()
        try:
            while live():
                self._wake.clear()
                batch = self.needs.take()
                lists = self._due_lists()
                if batch or lists:
                    if client is None:
                        client = self.client_factory()
                    self.run(client, batch, lists, live)
                    idle_since = time.monotonic()
                    continue
                wait = self._next_list_wait()
                if wait is None and time.monotonic() - idle_since >= self.idle_exit:
                    with self._lock:
                        if self.needs.queued() == 0 and not self._list_due:
                            self._thread = None
                            return
                    continue
                if self._wake.wait(min(wait if wait is not None else self.idle_exit, 1.0)):
                    # Let the notes of a burst gather: one database check for many.
                    time.sleep(self.gather)
        except Exception:
            log.exception("entity cache refresh stopped")
            with self._lock:
                if self._thread is me:
                    self._thread = None
        finally:
            if client is not None:
                client.close()
            try:
                self.flush()
            except Exception as exc:
                log.warning("entity cache: could not store fetched entities: %s", exc)
            with self._lock:
                if self._thread is None and self._db is not None:
                    self._db.dispose()
                    self._db = None

    def _due_lists(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            due = [kind for kind, when in self._list_due.items() if when <= now]
            for kind in due:
                del self._list_due[kind]
            return due

    def _next_list_wait(self) -> float | None:
        with self._lock:
            if not self._list_due:
                return None
            return max(0.0, min(self._list_due.values()) - time.monotonic())

    # --- work ---------------------------------------------------------------------------

    def run(
        self,
        client: NinjaOneClient,
        batch: list[Need],
        lists: list[str] | None = None,
        live: Callable[[], bool] = lambda: True,
    ) -> None:
        """Handle ``batch`` and the due list refreshes ``lists`` with ``client`` (while
        ``live()``)."""
        for kind in lists or []:
            self._refresh_list(client, kind)
        misses = [n.id for n in batch if n.action == "miss" and n.id is not None]
        cached = self._cached(devices, misses)
        for need in batch:
            if not live():
                break
            if need.id is None:
                if need.action == "list":
                    self._request_list(need.kind)
                continue
            if need.action == "miss":
                if need.id in cached:
                    self.needs.remember(need.id)
                elif not self._remembered_missing("device", need.id):
                    self.state.metrics.add(MISSES, {"kind": "device"})
                    self._fetch_device(client, need.id, "fetch")
            elif need.action == "refresh":
                if not self._remembered_missing("device", need.id):
                    self._fetch_device(client, need.id, "event")
            elif need.action == "delete":
                self._mark_deleted(devices, need.id, need.at, "event")
                # Its later events need no fetch: NinjaOne would answer 404.
                self._remember_missing("device", need.id, self.missing_ttl)
        self.flush()

    def _cached(self, table: Any, ids: list[int]) -> set[int]:
        if not ids:
            return set()
        buffered = self._buffered.get(table.name, set())
        wanted = [i for i in ids if i not in buffered]
        if not wanted:
            return set(ids)
        with self.db.connect() as conn:
            return store.cached_ids(conn, table, wanted) | (set(ids) & buffered)

    def _parent_cached(self, table: Any, entity_id: int) -> bool:
        """Whether the organization or location ``entity_id`` is cached (remembered once
        it is: the cache keeps rows, marked deleted at worst)."""
        key = (table.name, entity_id)
        if key in self._parents:
            return True
        if not self._cached(table, [entity_id]):
            return False
        if len(self._parents) >= self.max_remembered:
            self._parents.clear()
        self._parents.add(key)
        return True

    def _remembered_missing(self, kind: str, entity_id: int) -> bool:
        until = self.missing.get((kind, entity_id))
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self.missing[(kind, entity_id)]
        return False

    def _remember_missing(self, kind: str, entity_id: int, ttl: float) -> None:
        if len(self.missing) >= self.max_remembered:
            now = time.monotonic()
            self.missing = {k: v for k, v in self.missing.items() if v > now}
            if len(self.missing) >= self.max_remembered:
                self.missing.pop(next(iter(self.missing)))
        self.missing[(kind, entity_id)] = time.monotonic() + ttl

    def _count(self, kind: str, outcome: str) -> None:
        self.state.metrics.add(FETCHES, {"kind": kind, "outcome": outcome})

    def _fetch_device(self, client: NinjaOneClient, device_id: int, by: str) -> None:
        try:
            device = client.device(device_id)
        except NinjaOneError as exc:
            self._count("device", "error")
            self._remember_missing("device", device_id, self.error_ttl)
            self.needs.forget(device_id)  # a later activity may note it again
            log.warning("entity cache: fetching device %d failed: %s", device_id, exc)
            return
        if device is None or not isinstance(device.get("id"), int):
            self._count("device", "not_found")
            self._remember_missing("device", device_id, self.missing_ttl)
            self.needs.forget(device_id)  # noted again later, asked again after the TTL
            if by == "event":
                self._mark_deleted(devices, device_id, time.time(), by)
            return
        self._count("device", "ok")
        self.missing.pop(("device", device_id), None)
        row, now = device_row(device), time.time()
        self._write(
            devices, [device_id], lambda conn: store.sync_rows(conn, devices, [row], now, by)
        )
        self.needs.remember(device_id)
        self._complete_parents(client, device, by)

    def _complete_parents(self, client: NinjaOneClient, device: dict[str, Any], by: str) -> None:
        """Fetch the device's organization and its locations when the cache lacks them."""
        org_id, loc_id = device.get("organizationId"), device.get("locationId")
        if not isinstance(org_id, int):
            return
        org_missing = not self._parent_cached(organizations, org_id)
        loc_missing = isinstance(loc_id, int) and not self._parent_cached(locations, loc_id)
        if org_missing and not self._remembered_missing("organization", org_id):
            self.state.metrics.add(MISSES, {"kind": "organization"})
            self._fetch_organization(client, org_id, by)
        if (
            loc_missing
            and isinstance(loc_id, int)
            and not self._remembered_missing("location", loc_id)
        ):
            self.state.metrics.add(MISSES, {"kind": "location"})
            found = self._fetch_locations(client, org_id, by)
            if found is not None and loc_id not in found:
                self._remember_missing("location", loc_id, self.missing_ttl)

    def _fetch_organization(self, client: NinjaOneClient, org_id: int, by: str) -> None:
        try:
            org = client.organization(org_id)
        except NinjaOneError as exc:
            self._count("organization", "error")
            self._remember_missing("organization", org_id, self.error_ttl)
            log.warning("entity cache: fetching organization %d failed: %s", org_id, exc)
            return
        if org is None:
            self._count("organization", "not_found")
            self._remember_missing("organization", org_id, self.missing_ttl)
            return
        self._count("organization", "ok")
        # The details answer lists the organization's locations too; the cache keeps
        # them as their own rows (from the locations answer), not inside this one.
        record = {k: v for k, v in org.items() if k != "locations"}
        record.setdefault("id", org_id)
        row, now = organization_row(record, full=True), time.time()
        self._write(
            organizations,
            [org_id],
            lambda conn: store.sync_rows(conn, organizations, [row], now, by),
        )

    def _fetch_locations(self, client: NinjaOneClient, org_id: int, by: str) -> set[int] | None:
        """Cache the organization's locations; returns their ids (None: not fetched)."""
        started = time.time()
        try:
            found = client.organization_locations(org_id)
        except NinjaOneError as exc:
            self._count("location", "error")
            log.warning(
                "entity cache: fetching organization %d's locations failed: %s", org_id, exc
            )
            return None
        if found is None:
            self._count("location", "not_found")
            return None
        self._count("location", "ok")
        rows = [
            location_row(loc, full=True, organization_id=org_id)
            for loc in found
            if isinstance(loc.get("id"), int)
        ]
        now = time.time()

        def write(conn: Connection) -> None:
            store.sync_rows(conn, locations, rows, now, by)
            # The answer is the organization's whole list: what it lacks is gone.
            store.mark_unseen_deleted(conn, locations, started, now, by, organization_id=org_id)

        self._write(locations, [r["id"] for r in rows], write)
        return {r["id"] for r in rows}

    def _mark_deleted(self, table: Any, entity_id: int, at: float, by: str) -> None:
        now = time.time()
        self._write(
            table, [], lambda conn: store.mark_deleted(conn, table, [entity_id], at, now, by)
        )

    def _write(self, table: Any, ids: list[int], write: Callable[[Connection], Any]) -> None:
        """Buffer a write: the buffer goes to the database in one transaction at most every
        ``flush_interval`` seconds (and at the end of each batch), so that ingest meets
        few concurrent write transactions (on SQLite each one also costs every other
        connection its page cache)."""
        self._writes.append((_TABLE_ORDER[table.name], len(self._writes), write))
        self._buffered.setdefault(table.name, set()).update(ids)
        if time.monotonic() - self._flushed >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered, organizations before locations before devices (the order
        every writer uses, so no two transactions wait on each other in a cycle)."""
        writes, self._writes = sorted(self._writes, key=lambda w: w[:2]), []
        self._flushed = time.monotonic()
        if writes:
            with self.db.begin() as conn:
                for _, _, write in writes:
                    write(conn)
        self._buffered = {}

    def _request_list(self, kind: str) -> None:
        """Refresh ``kind``'s whole list now, or at the end of the debounce window."""
        now = time.monotonic()
        with self._lock:
            if kind in self._list_due:
                return
            last = self._listed.get(kind)
            self._list_due[kind] = now if last is None else max(now, last + self.list_debounce)
        self._wake.set()

    def _refresh_list(self, client: NinjaOneClient, kind: str) -> None:
        with self._lock:
            self._listed[kind] = time.monotonic()
        try:
            sync_entities(self.state, client, kinds=(_LIST_KINDS[kind],), by="event")
        except NinjaOneError as exc:
            self._count(kind, "error")
            log.warning("entity cache: refreshing the %s list failed: %s", kind, exc)
            return
        self._count(kind, "ok")
