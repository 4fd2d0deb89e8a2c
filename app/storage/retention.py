"""Deleting old rows in small batches, each in its own short transaction."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.storage.tables import activities, alert_activities, alerts, rejected_deliveries


def _keeps_open_alert() -> sa.ColumnElement[bool]:
    """True for an activity in the history of an open alert."""
    return (
        sa.select(alert_activities.c.activity_id)
        .join(alerts, alerts.c.key == alert_activities.c.alert_key)
        .where(alert_activities.c.activity_id == activities.c.id, alerts.c.state == "open")
        .exists()
    )


def prune_activities_batch(conn: Connection, cutoff: float, batch: int) -> int:
    """Delete up to ``batch`` activities older than ``cutoff`` (activityTime, or the
    arrival time when it has none) that no open alert needs; returns how many.

    Their alert links go with them, and so does a closed alert left with no history.
    """
    old = sa.or_(
        activities.c.activity_time < cutoff,
        sa.and_(activities.c.activity_time.is_(None), activities.c.received_at < cutoff),
    )
    ids = list(
        conn.execute(
            sa.select(activities.c.id).where(old, ~_keeps_open_alert()).limit(batch)
        ).scalars()
    )
    if not ids:
        return 0
    keys = list(
        conn.execute(
            sa.select(alert_activities.c.alert_key)
            .where(alert_activities.c.activity_id.in_(ids))
            .distinct()
        ).scalars()
    )
    conn.execute(sa.delete(alert_activities).where(alert_activities.c.activity_id.in_(ids)))
    conn.execute(sa.delete(activities).where(activities.c.id.in_(ids)))
    if keys:
        linked = sa.select(alert_activities.c.alert_key).where(
            alert_activities.c.alert_key == alerts.c.key
        )
        conn.execute(
            sa.delete(alerts).where(
                alerts.c.key.in_(keys), alerts.c.state == "closed", ~linked.exists()
            )
        )
    return len(ids)


def prune_rejected_batch(conn: Connection, cutoff: float, batch: int) -> int:
    """Delete up to ``batch`` rejected deliveries received before ``cutoff``."""
    ids = list(
        conn.execute(
            sa.select(rejected_deliveries.c.id)
            .where(rejected_deliveries.c.received_at < cutoff)
            .limit(batch)
        ).scalars()
    )
    if ids:
        conn.execute(sa.delete(rejected_deliveries).where(rejected_deliveries.c.id.in_(ids)))
    return len(ids)


def optimize(conn: Connection, *, analyze: bool = False) -> None:
    """Refresh the query planner's statistics after many rows changed.

    SQLite keeps no statistics on its own: without them it may pick a poor index for
    a filtered page. PostgreSQL's autovacuum keeps them; ``analyze`` forces it now.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("ANALYZE" if analyze else "PRAGMA optimize")
    elif analyze:
        conn.exec_driver_sql("ANALYZE")
