"""Queries behind the dashboard's charts: activities per hour, and the alert events that
say how many alerts were open when.

Both read a bounded window through an index, so their cost follows what happened in
the window, not what is stored: activities by ``ix_activities_activity_time_id`` (a
range on activityTime; the arrival time has no index), alerts by
``ix_alerts_state_last_activity_time`` and the ``(alert_key, kind, order_time)`` index
of their links.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.storage.tables import activities, alert_activities, alerts

HOUR = 3600.0
# The fold's two states (app.alerts.service): naming both lets the alerts index serve a
# range on last_activity_time.
ALERT_STATES = ("open", "closed")
# Link kinds that change an alert's state: T (TRIGGERED) opens it, R (a RESET) closes it.
STATE_KINDS = ("T", "R")


def _hour_of(column: sa.ColumnElement[Any], start: float, dialect: str) -> sa.ColumnElement[Any]:
    """Whole hours from ``start`` to ``column`` (not before ``start``), rounded down.

    SQLite's CAST truncates, PostgreSQL's rounds, so PostgreSQL takes FLOOR first.
    """
    hours = (column - sa.literal(start, sa.Float)) / sa.literal(HOUR, sa.Float)
    if dialect == "postgresql":
        hours = sa.func.floor(hours)
    return sa.cast(hours, sa.Integer)


def activity_counts_per_hour(
    conn: Connection, start: float, hours: int
) -> list[tuple[int, str | None, int]]:
    """(hour, activityType, count) for the activities whose activityTime falls in
    ``hours`` whole hours from ``start``; ``hour`` counts from 0. Hours and types without
    activities are left out. An activity without an activityTime, or with one outside the
    window (a device clock years off), is not counted."""
    time = activities.c.activity_time
    end = start + hours * HOUR
    bucketed = (
        sa.select(
            _hour_of(time, start, conn.dialect.name).label("hour"),
            activities.c.activity_type.label("activity_type"),
        )
        .where(time >= start, time < end)
        .subquery("bucketed")
    )
    stmt = sa.select(bucketed.c.hour, bucketed.c.activity_type, sa.func.count()).group_by(
        bucketed.c.hour, bucketed.c.activity_type
    )
    return [(int(hour), kind, int(count)) for hour, kind, count in conn.execute(stmt)]


def open_before(conn: Connection, start: float) -> dict[str | None, int]:
    """Open alerts whose every activity is ordered before ``start``, per severity (None:
    no severity): nothing in the window changes them, so they are open throughout it."""
    stmt = (
        sa.select(alerts.c.severity, sa.func.count())
        .where(alerts.c.state == "open", alerts.c.last_activity_time < start)
        .group_by(alerts.c.severity)
    )
    return {severity: int(count) for severity, count in conn.execute(stmt)}


# A TRIGGERED or RESET link: (alert_key, kind, order_time, activity_id, severity).
StateChange = tuple[str, str, float, int, str | None]


def state_changes_since(conn: Connection, start: float) -> list[StateChange]:
    """The TRIGGERED and RESET links of every alert whose state may change at or after
    ``start`` (an activity from there on, and open or closed from there on): all those
    ordered from ``start`` on, and the last of each kind before it, which decide the
    alert's state at ``start`` (only the TRIGGERED for an alert open since before it).

    ``severity`` is the link's, else the alert's current one. Rows come in no particular
    order, as plain tuples (:data:`StateChange`).

    The alerts and the ids of their last links before ``start`` are one MATERIALIZED CTE
    (two index seeks per alert); joined by id afterwards, each link is one primary-key
    seek. Written as a correlated subquery in the join, PostgreSQL ran the subquery once
    per link of the alert, not once per alert (10x slower on 1,000,000 activities).
    (``AS MATERIALIZED`` on PostgreSQL, which needs 12 or newer.)
    """
    link = alert_activities.c

    def last_before(kind: str) -> sa.ScalarSelect[Any]:
        earlier = alert_activities.alias(f"earlier_{kind.lower()}")
        return (
            sa.select(earlier.c.activity_id)
            .where(
                earlier.c.alert_key == alerts.c.key,
                earlier.c.kind == kind,
                earlier.c.order_time < start,
            )
            .order_by(earlier.c.order_time.desc(), earlier.c.activity_id.desc())
            .limit(1)
            .scalar_subquery()
        )

    # Open since before ``start``: the episode's TRIGGERED (opened_at) precedes it and no
    # RESET followed, so the last TRIGGERED before ``start`` alone says the state there.
    open_throughout = sa.and_(alerts.c.state == "open", alerts.c.opened_at < start)
    changed = (
        sa.select(
            alerts.c.key.label("key"),
            alerts.c.severity.label("severity"),
            last_before("T").label("triggered_id"),
            # CASE evaluates the subquery only when it is needed (both backends).
            sa.case((open_throughout, sa.null()), else_=last_before("R")).label("reset_id"),
        )
        .where(
            alerts.c.state.in_(ALERT_STATES),
            alerts.c.last_activity_time >= start,
            # A closed alert's closed_at is its last RESET: closed before ``start``, it has
            # no TRIGGERED or RESET from there on and is closed throughout.
            sa.or_(alerts.c.state == "open", alerts.c.closed_at >= start),
        )
        .cte("changed")
        # PostgreSQL would otherwise inline it into each join (see above); SQLite
        # materializes a CTE used more than once anyway, and its MATERIALIZED keyword
        # needs 3.35 where the README promises 3.34.
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    columns = (
        link.alert_key,
        link.kind,
        link.order_time,
        link.activity_id,
        sa.func.coalesce(link.severity, changed.c.severity).label("severity"),
    )
    in_window = (
        sa.select(*columns)
        .select_from(changed.join(alert_activities, link.alert_key == changed.c.key))
        .where(link.kind.in_(STATE_KINDS), link.order_time >= start)
    )

    def last_link(last_id: sa.ColumnElement[Any]) -> sa.Select[Any]:
        # One equality per join (not IN of both ids): PostgreSQL then seeks the primary
        # key for each alert rather than hashing every link.
        return sa.select(*columns).select_from(
            changed.join(
                alert_activities,
                sa.and_(link.alert_key == changed.c.key, link.activity_id == last_id),
            )
        )

    stmt: sa.CompoundSelect[Any] = sa.union_all(
        in_window, last_link(changed.c.triggered_id), last_link(changed.c.reset_id)
    )
    return [
        (key, kind, float(order_time), int(activity_id), severity)
        for key, kind, order_time, activity_id, severity in conn.execute(stmt)
    ]
