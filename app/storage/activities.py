"""Queries on stored activities, rejected deliveries and spec drift."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from app.storage.tables import (
    activities,
    devices,
    locations,
    organizations,
    rejected_deliveries,
    spec_drift,
)

# Columns the read API exposes, in API naming.
ACTIVITY_COLUMNS: Mapping[str, sa.Column[Any]] = {
    "id": activities.c.id,
    "activityTime": activities.c.activity_time,
    "deviceId": activities.c.device_id,
    "organizationId": activities.c.organization_id,
    "locationId": activities.c.location_id,
    "activityType": activities.c.activity_type,
    "statusCode": activities.c.status_code,
    "severity": activities.c.severity,
    "priority": activities.c.priority,
    "activityResult": activities.c.activity_result,
    "seriesUid": activities.c.series_uid,
    "sourceConfigUid": activities.c.source_config_uid,
    "sourceName": activities.c.source_name,
    "userId": activities.c.user_id,
    "message": activities.c.message,
    "subject": activities.c.subject,
    "source": activities.c.source,
    "receivedAt": activities.c.received_at,
}


def _insert(conn: Connection, table: sa.Table) -> Any:
    """A dialect-specific INSERT that supports ON CONFLICT."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_activity(conn: Connection, row: Mapping[str, Any]) -> bool:
    """Insert one activity unless its id is stored already; True when it was new.

    The primary key decides, so concurrent deliveries of one id on any number
    of processes or hosts store exactly one row.
    """
    return conn.execute(_insert_activity_statement(conn.dialect.name), row).first() is not None


@functools.cache
def _insert_activity_statement(dialect: str) -> Any:
    # Built once and given the row as parameters: building it with .values(**row) for
    # every delivery made SQLAlchemy construct and cache-key 20 bound values each time.
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(activities)
        .on_conflict_do_nothing(index_elements=[activities.c.id])
        .returning(activities.c.id)
    )


def existing_activity_ids(conn: Connection, ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` are stored."""
    if not ids:
        return set()
    rows = conn.execute(sa.select(activities.c.id).where(activities.c.id.in_(list(ids))))
    return {r[0] for r in rows}


def newest_activity_id(conn: Connection) -> int | None:
    """The largest stored activity id, or None when nothing is stored."""
    return conn.execute(sa.select(sa.func.max(activities.c.id))).scalar()


def count_activities(conn: Connection) -> int:
    """How many activities are stored."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(activities)).scalar() or 0)


def get_activity(conn: Connection, activity_id: int) -> Row[Any] | None:
    """One stored activity with its raw bytes, or None."""
    return conn.execute(sa.select(activities).where(activities.c.id == activity_id)).first()


def get_activity_raw(conn: Connection, activity_id: int) -> bytes | None:
    """The exact bytes received for an activity, or None."""
    raw = conn.execute(sa.select(activities.c.raw).where(activities.c.id == activity_id)).scalar()
    return None if raw is None else bytes(raw)


@dataclass(frozen=True)
class ActivityFilter:
    """Filters for :func:`list_activities`; None means no filter on that column."""

    device_id: int | None = None
    organization_id: int | None = None
    location_id: int | None = None
    activity_type: str | None = None
    status_code: str | None = None
    severity: str | None = None
    series_uid: str | None = None
    source_name: str | None = None
    text: str | None = None
    since: float | None = None
    until: float | None = None


def _where(flt: ActivityFilter) -> list[sa.ColumnElement[bool]]:
    c = activities.c
    clauses: list[sa.ColumnElement[bool]] = []
    equal = {
        c.device_id: flt.device_id,
        c.organization_id: flt.organization_id,
        c.location_id: flt.location_id,
        c.activity_type: flt.activity_type,
        c.status_code: flt.status_code,
        c.severity: flt.severity,
        c.series_uid: flt.series_uid,
        c.source_name: flt.source_name,
    }
    clauses.extend(col == value for col, value in equal.items() if value is not None)
    if flt.since is not None:
        clauses.append(c.activity_time >= flt.since)
    if flt.until is not None:
        clauses.append(c.activity_time < flt.until)
    if flt.text:
        pattern = "%" + flt.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append(
            sa.or_(c.message.ilike(pattern, escape="\\"), c.subject.ilike(pattern, escape="\\"))
        )
    return clauses


def _record_select() -> sa.Select[Any]:
    """Every API column under its API name, the raw body, and the names from the entity cache.

    An activity delivered without expansion still gets organization and location
    names through its cached device.
    """
    org_id = sa.func.coalesce(activities.c.organization_id, devices.c.organization_id)
    loc_id = sa.func.coalesce(activities.c.location_id, devices.c.location_id)
    return (
        sa.select(
            *[col.label(name) for name, col in ACTIVITY_COLUMNS.items()],
            activities.c.raw.label("raw"),
            sa.func.coalesce(devices.c.display_name, devices.c.system_name).label("deviceName"),
            organizations.c.name.label("organizationName"),
            locations.c.name.label("locationName"),
        )
        .select_from(activities)
        .outerjoin(devices, devices.c.id == activities.c.device_id)
        .outerjoin(organizations, organizations.c.id == org_id)
        .outerjoin(locations, locations.c.id == loc_id)
    )


def get_activity_record(conn: Connection, activity_id: int) -> Row[Any] | None:
    """One activity under API column names, with ``raw``; None when not stored."""
    return conn.execute(_record_select().where(activities.c.id == activity_id)).first()


def list_activities(
    conn: Connection, flt: ActivityFilter, *, limit: int, before_id: int | None = None
) -> list[Row[Any]]:
    """Up to ``limit`` activities matching ``flt``, newest (highest id) first, below ``before_id``.

    Rows carry the API column names and ``raw``.
    """
    stmt = _record_select().where(*_where(flt))
    if before_id is not None:
        stmt = stmt.where(activities.c.id < before_id)
    stmt = stmt.order_by(activities.c.id.desc()).limit(limit)
    return list(conn.execute(stmt))


def insert_rejected(
    conn: Connection,
    *,
    received_at: float,
    reason: str,
    field: str | None,
    content_type: str | None,
    body: bytes,
    body_bytes: int,
    truncated: bool,
) -> int:
    """Keep an authenticated delivery that failed validation; returns its row id."""
    result = conn.execute(
        sa.insert(rejected_deliveries)
        .values(
            received_at=received_at,
            reason=reason,
            field=field,
            content_type=content_type,
            body=body,
            body_bytes=body_bytes,
            truncated=truncated,
        )
        .returning(rejected_deliveries.c.id)
    )
    return int(result.scalar_one())


def list_rejected(conn: Connection, *, limit: int, before_id: int | None = None) -> list[Row[Any]]:
    """Rejected deliveries, newest first."""
    stmt = sa.select(rejected_deliveries)
    if before_id is not None:
        stmt = stmt.where(rejected_deliveries.c.id < before_id)
    return list(conn.execute(stmt.order_by(rejected_deliveries.c.id.desc()).limit(limit)))


def count_rejected(conn: Connection) -> int:
    """How many rejected deliveries are kept."""
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(rejected_deliveries)).scalar() or 0
    )


def record_spec_drift(conn: Connection, field: str, value: str, now: float) -> None:
    """Count one more sighting of an unknown enum value."""
    stmt = _insert(conn, spec_drift).values(
        field=field, value=value[:200], count=1, first_seen=now, last_seen=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[spec_drift.c.field, spec_drift.c.value],
        set_={"count": spec_drift.c.count + 1, "last_seen": now},
    )
    conn.execute(stmt)


def list_spec_drift(conn: Connection) -> list[Row[Any]]:
    """Every unknown value seen, most frequent first."""
    return list(
        conn.execute(
            sa.select(spec_drift).order_by(
                spec_drift.c.count.desc(), spec_drift.c.field, spec_drift.c.value
            )
        )
    )
