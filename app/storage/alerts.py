"""Queries on alerts and their activity history."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from app.storage.activities import insert_for, record_select
from app.storage.prepared import Prepared
from app.storage.tables import (
    activities,
    alert_activities,
    alerts,
    devices,
    locations,
    organizations,
)

# The activity columns the alert fold reads, under the names app.alerts.service uses.
EVENT_COLUMNS: tuple[sa.ColumnElement[Any], ...] = (
    activities.c.id,
    activities.c.activity_time,
    activities.c.received_at,
    activities.c.activity_type,
    activities.c.status_code,
    activities.c.severity,
    activities.c.priority,
    activities.c.device_id,
    activities.c.organization_id,
    activities.c.location_id,
    activities.c.series_uid,
    activities.c.source_config_uid,
    activities.c.source_name,
    activities.c.message,
)

# What the read API shows for an alert, with names from the entity cache.
_DEVICE_NAME = sa.func.coalesce(devices.c.display_name, devices.c.system_name)


@dataclass(frozen=True)
class AlertFilter:
    """Filters for :func:`list_alerts`; None means no filter on that column."""

    state: str = "open"
    organization_id: int | None = None
    device_id: int | None = None
    severity: str | None = None


# Every column of an alert row but its key, as the fold produces them.
_ALERT_COLUMNS = tuple(column for column in alerts.c if column.name != "key")


def _lock_statement(dialect: str) -> Any:
    new_row = insert_for(dialect, alerts).values(
        key=sa.bindparam("key"), state="closed", acknowledged=False
    )
    # DO UPDATE (of nothing that changes) rather than DO NOTHING: it returns the row
    # whether or not it was just inserted, and on PostgreSQL it takes the row lock,
    # waiting for a concurrent transaction on the same alert and then returning that
    # transaction's committed row.
    return new_row.on_conflict_do_update(
        index_elements=[alerts.c.key], set_={"key": new_row.excluded.key}
    ).returning(*_ALERT_COLUMNS)


def _link_statement(dialect: str) -> Any:
    return (
        insert_for(dialect, alert_activities)
        .values(alert_key=sa.bindparam("alert_key"), activity_id=sa.bindparam("activity_id"))
        .on_conflict_do_nothing(
            index_elements=[alert_activities.c.alert_key, alert_activities.c.activity_id]
        )
    )


def _write_statement(_dialect: str) -> Any:
    # SET takes the columns from the parameters' names (every column but the key).
    return sa.update(alerts).where(alerts.c.key == sa.bindparam("alert_key"))


# Ingest runs these three for every CONDITION activity, inside the write transaction:
# see app.storage.prepared.
_LOCK = Prepared(_lock_statement)
_LINK = Prepared(_link_statement)
_WRITE = Prepared(_write_statement)


def lock_alert(conn: Connection, key: str) -> Mapping[str, Any]:
    """Make sure the alert row exists, hold it until the transaction ends, and return it.

    A new row holds the columns of an alert with no activities (closed, nothing
    applied). Concurrent deliveries for one alert then update it one after the
    other, each seeing the row and links the previous one committed (PostgreSQL's
    READ COMMITTED takes a fresh snapshot per statement; SQLite has a single writer
    anyway).
    """
    (row,) = _LOCK.execute(conn, {"key": key})
    return row


def link_activity(conn: Connection, key: str, activity_id: int) -> None:
    """Add an activity to an alert's history (once, whatever happens)."""
    _LINK.execute(conn, {"alert_key": key, "activity_id": activity_id})


def alert_events(conn: Connection, key: str) -> list[Row[Any]]:
    """The stored activities of one alert (the fold's input columns), in any order."""
    stmt = (
        sa.select(*EVENT_COLUMNS)
        .join(alert_activities, alert_activities.c.activity_id == activities.c.id)
        .where(alert_activities.c.alert_key == key)
    )
    return list(conn.execute(stmt))


def write_alert(conn: Connection, key: str, values: Mapping[str, Any]) -> None:
    """Replace every column of an existing alert row (``values`` has them all)."""
    _WRITE.execute(conn, {**values, "alert_key": key})


def condition_events(conn: Connection, *, batch: int = 5000) -> Iterator[list[Row[Any]]]:
    """Every stored CONDITION* activity (the fold's columns), in id order, ``batch`` at a time."""
    after = -1
    while True:
        rows = list(
            conn.execute(
                sa.select(*EVENT_COLUMNS)
                .where(activities.c.activity_type.like("CONDITION%"), activities.c.id > after)
                .order_by(activities.c.id)
                .limit(batch)
            )
        )
        if not rows:
            return
        yield rows
        after = rows[-1].id


def count_condition_activities(conn: Connection) -> int:
    """How many CONDITION* activities are stored (for progress output)."""
    stmt = sa.select(sa.func.count()).where(activities.c.activity_type.like("CONDITION%"))
    return int(conn.execute(stmt).scalar() or 0)


def replace_all(
    conn: Connection, rows: Sequence[Mapping[str, Any]], links: Sequence[tuple[str, int]]
) -> None:
    """Drop every alert and link, then store ``rows`` and ``links`` (``alerts rebuild``)."""
    conn.execute(sa.delete(alert_activities))
    conn.execute(sa.delete(alerts))
    for start in range(0, len(rows), 1000):
        conn.execute(sa.insert(alerts), [dict(r) for r in rows[start : start + 1000]])
    for start in range(0, len(links), 5000):
        conn.execute(
            sa.insert(alert_activities),
            [{"alert_key": k, "activity_id": a} for k, a in links[start : start + 5000]],
        )


def _alert_select() -> sa.Select[Any]:
    return (
        sa.select(
            alerts,
            _DEVICE_NAME.label("device_name"),
            organizations.c.name.label("organization_name"),
            locations.c.name.label("location_name"),
        )
        .select_from(alerts)
        .outerjoin(devices, devices.c.id == alerts.c.device_id)
        .outerjoin(organizations, organizations.c.id == alerts.c.organization_id)
        .outerjoin(locations, locations.c.id == alerts.c.location_id)
    )


def list_alerts(
    conn: Connection, flt: AlertFilter, *, limit: int, before_id: int | None = None
) -> list[Row[Any]]:
    """Up to ``limit`` alerts matching ``flt``, most recently active (by last activity id)
    first, below ``before_id``; rows carry the entity names."""
    stmt = _alert_select().where(alerts.c.last_activity_id.is_not(None))
    if flt.state != "all":
        stmt = stmt.where(alerts.c.state == flt.state)
    if flt.organization_id is not None:
        stmt = stmt.where(alerts.c.organization_id == flt.organization_id)
    if flt.device_id is not None:
        stmt = stmt.where(alerts.c.device_id == flt.device_id)
    if flt.severity is not None:
        stmt = stmt.where(alerts.c.severity == flt.severity)
    if before_id is not None:
        stmt = stmt.where(alerts.c.last_activity_id < before_id)
    return list(conn.execute(stmt.order_by(alerts.c.last_activity_id.desc()).limit(limit)))


def get_alert(conn: Connection, key: str) -> Row[Any] | None:
    """One alert with entity names, or None."""
    return conn.execute(_alert_select().where(alerts.c.key == key)).first()


def alert_history(conn: Connection, key: str) -> list[Row[Any]]:
    """An alert's activities under API column names with ``raw`` and entity names, oldest
    first (by activityTime, as the alert was folded)."""
    order_time = sa.func.coalesce(activities.c.activity_time, activities.c.received_at)
    ids = sa.select(alert_activities.c.activity_id.label("id")).where(
        alert_activities.c.alert_key == key
    )
    stmt = record_select(ids.subquery()).order_by(order_time, activities.c.id)
    return list(conn.execute(stmt))


def all_alerts(conn: Connection) -> list[Row[Any]]:
    """Every alert row (no names), by key; for comparisons and exports."""
    return list(conn.execute(sa.select(alerts).order_by(alerts.c.key)))


def open_alerts_by_severity(conn: Connection) -> dict[str | None, int]:
    """How many alerts are open, per severity (None: no severity given)."""
    stmt = (
        sa.select(alerts.c.severity, sa.func.count())
        .where(alerts.c.state == "open")
        .group_by(alerts.c.severity)
    )
    return {row[0]: int(row[1]) for row in conn.execute(stmt)}
