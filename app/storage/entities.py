"""Queries on the entity cache (organizations, locations, devices) and NinjaOne checkpoints.

Every write is an upsert guarded by ``observed_at``: a row changes only when the
incoming data was true later than what is stored, so a late, replayed or
backfilled delivery never overwrites fresher data. Only the columns the caller
knows are written; a name-only reference never erases a description or raw JSON.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from app.storage.activities import dialect_insert, insert_for
from app.storage.tables import devices, locations, ninjaone_checkpoints, organizations

TABLES: Mapping[str, sa.Table] = {
    "organizations": organizations,
    "locations": locations,
    "devices": devices,
}


def upsert_if_newer(conn: Connection, table: sa.Table, row: Mapping[str, Any]) -> bool:
    """Insert ``row`` or update the stored one when ``row["observed_at"]`` is newer.

    ``row`` must carry ``id``, ``observed_at`` and ``updated_at``; its other keys are
    the columns to write. True when a row was inserted or updated.
    """
    stmt = dialect_insert(conn, table).values(**row)
    changes = {key: stmt.excluded[key] for key in row if key != "id"}
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.id],
        set_=changes,
        where=table.c.observed_at < stmt.excluded.observed_at,
    ).returning(table.c.id)
    return conn.execute(stmt).first() is not None


@functools.lru_cache(maxsize=64)
def _guarded_upsert(dialect: str, table_name: str, columns: tuple[str, ...]) -> Any:
    """The guarded upsert of ``columns`` into one table, built once per column set.

    Building an ``INSERT … ON CONFLICT`` construct (its ``excluded`` collection, its
    cache key) costs far more than executing it, so ingest reuses one construct per
    (dialect, table, columns) and passes the values as parameters. The key space is
    small: the column sets that :mod:`app.entities.service` produces.
    """
    table = TABLES[table_name]
    stmt = insert_for(dialect, table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c.id],
        set_={column: stmt.excluded[column] for column in columns if column != "id"},
        where=table.c.observed_at < stmt.excluded.observed_at,
    )


def upsert_rows_if_newer(
    conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """:func:`upsert_if_newer` for several rows of one table, one statement per column set.

    The guard is in the SQL (``WHERE stored.observed_at < excluded.observed_at``), so
    there is no read before the write and concurrent writers cannot roll a row back.
    The rows must have distinct ids (one statement cannot update a row twice).
    """
    by_columns: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        by_columns.setdefault(tuple(row), []).append(row)
    for columns, group in by_columns.items():
        stmt = _guarded_upsert(conn.dialect.name, table.name, columns)
        conn.execute(stmt, group[0] if len(group) == 1 else group)


@dataclass
class SyncCounts:
    """What one page of ``sync`` did to one table."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def __iadd__(self, other: SyncCounts) -> SyncCounts:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        return self


def sync_rows(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    now: float,
    by: str = "sync",
) -> SyncCounts:
    """Store a page of rows fetched from the API at ``now``, counting what changed.

    A row whose columns equal the stored ones is *unchanged*: only its
    ``observed_at`` moves forward (so older deliveries still lose against it) and
    ``updated_at`` keeps the time of the last real change. Every row of the page is
    stamped ``refreshed_at = now`` and ``refreshed_by = by`` and is no longer deleted
    (NinjaOne just listed it); a row that was marked deleted counts as updated.
    """
    counts = SyncCounts()
    if not rows:
        return counts
    ids = [r["id"] for r in rows]
    stored = {r.id: r._mapping for r in conn.execute(sa.select(table).where(table.c.id.in_(ids)))}
    seen = {"deleted_at": None, "refreshed_at": now, "refreshed_by": by}
    # id -> the row to write: one statement per column set (upsert_rows_if_newer), not
    # one construct per row (the background fetch stores rows one by one, while ingest
    # waits for the write lock on SQLite).
    written: dict[int, dict[str, Any]] = {}
    for row in rows:
        before = stored.get(row["id"])
        if before is None:
            counts.added += 1
        elif before["observed_at"] >= now:
            # Something newer than this fetch (a delivery) is stored already.
            counts.unchanged += 1
            conn.execute(sa.update(table).where(table.c.id == row["id"]).values(**seen))
            continue
        elif all(before[k] == v for k, v in row.items()) and before["deleted_at"] is None:
            counts.unchanged += 1
            conn.execute(
                sa.update(table).where(table.c.id == row["id"]).values(observed_at=now, **seen)
            )
            continue
        else:
            counts.updated += 1
        written[row["id"]] = {**row, "observed_at": now, "updated_at": now, **seen}
    upsert_rows_if_newer(conn, table, list(written.values()))
    return counts


def mark_deleted(
    conn: Connection, table: sa.Table, ids: Sequence[int], at: float, now: float, by: str
) -> int:
    """Mark the rows ``ids`` deleted in NinjaOne as of ``at`` (kept, never removed).

    A row already marked keeps its first ``deleted_at``. Returns the rows newly marked.
    """
    if not ids:
        return 0
    result = conn.execute(
        sa.update(table)
        .where(table.c.id.in_(list(ids)), table.c.deleted_at.is_(None))
        .values(deleted_at=at, refreshed_at=now, refreshed_by=by)
    )
    return int(result.rowcount or 0)


def mark_unseen_deleted(
    conn: Connection,
    table: sa.Table,
    since: float,
    now: float,
    by: str,
    *,
    organization_id: int | None = None,
) -> list[int]:
    """After a complete listing that started at ``since``: mark deleted every row not
    refreshed since then (NinjaOne no longer lists it). ``organization_id`` limits it to
    that organization's rows (a listing of one organization's locations). Returns their
    ids."""
    unseen = sa.and_(
        table.c.deleted_at.is_(None),
        sa.or_(table.c.refreshed_at.is_(None), table.c.refreshed_at < since),
    )
    if organization_id is not None:
        unseen = sa.and_(unseen, table.c.organization_id == organization_id)
    ids = [int(i) for i in conn.execute(sa.select(table.c.id).where(unseen)).scalars()]
    for start in range(0, len(ids), 500):
        mark_deleted(conn, table, ids[start : start + 500], now, now, by)
    return ids


def cached_ids(conn: Connection, table: sa.Table, ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` have a row in ``table`` (deleted ones included)."""
    if not ids:
        return set()
    stmt = sa.select(table.c.id).where(table.c.id.in_(list(ids)))
    return {int(i) for i in conn.execute(stmt).scalars()}


def entity_states(conn: Connection) -> dict[str, tuple[int, int]]:
    """Per table (organizations, locations, devices): (rows cached, rows marked deleted)."""
    found = {}
    for name, table in TABLES.items():
        row = conn.execute(sa.select(sa.func.count(), sa.func.count(table.c.deleted_at))).one()
        found[name] = (int(row[0]), int(row[1]))
    return found


def _device_select() -> sa.Select[Any]:
    return (
        sa.select(
            devices,
            organizations.c.name.label("organization_name"),
            locations.c.name.label("location_name"),
        )
        .select_from(devices)
        .outerjoin(organizations, organizations.c.id == devices.c.organization_id)
        .outerjoin(locations, locations.c.id == devices.c.location_id)
    )


def list_devices(
    conn: Connection,
    *,
    limit: int,
    after_id: int | None = None,
    organization_id: int | None = None,
    location_id: int | None = None,
) -> list[Row[Any]]:
    """Cached devices by ascending id after ``after_id``, with organization and location names."""
    stmt = _device_select()
    if after_id is not None:
        stmt = stmt.where(devices.c.id > after_id)
    if organization_id is not None:
        stmt = stmt.where(devices.c.organization_id == organization_id)
    if location_id is not None:
        stmt = stmt.where(devices.c.location_id == location_id)
    return list(conn.execute(stmt.order_by(devices.c.id).limit(limit)))


def get_device(conn: Connection, device_id: int) -> Row[Any] | None:
    """One cached device with organization and location names, or None."""
    return conn.execute(_device_select().where(devices.c.id == device_id)).first()


def list_organizations(
    conn: Connection, *, limit: int, after_id: int | None = None
) -> list[Row[Any]]:
    """Cached organizations by ascending id after ``after_id``."""
    stmt = sa.select(organizations)
    if after_id is not None:
        stmt = stmt.where(organizations.c.id > after_id)
    return list(conn.execute(stmt.order_by(organizations.c.id).limit(limit)))


def list_locations(
    conn: Connection,
    *,
    limit: int,
    after_id: int | None = None,
    organization_id: int | None = None,
) -> list[Row[Any]]:
    """Cached locations by ascending id after ``after_id``."""
    stmt = sa.select(locations)
    if after_id is not None:
        stmt = stmt.where(locations.c.id > after_id)
    if organization_id is not None:
        stmt = stmt.where(locations.c.organization_id == organization_id)
    return list(conn.execute(stmt.order_by(locations.c.id).limit(limit)))


def get_checkpoint(conn: Connection, name: str) -> int | None:
    """The value of checkpoint ``name``, or None when it was never set."""
    value = conn.execute(
        sa.select(ninjaone_checkpoints.c.value).where(ninjaone_checkpoints.c.name == name)
    ).scalar()
    return None if value is None else int(value)


def advance_checkpoint(conn: Connection, name: str, value: int, now: float) -> None:
    """Set checkpoint ``name`` to ``value`` unless it is already at or beyond it."""
    stmt = dialect_insert(conn, ninjaone_checkpoints).values(name=name, value=value, updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ninjaone_checkpoints.c.name],
        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        where=ninjaone_checkpoints.c.value < stmt.excluded.value,
    )
    conn.execute(stmt)
