"""Deleting old rows in small batches, each in its own short transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.storage.notifications import (
    DEAD,
    DELIVERED,
    SKIPPED,
    SUPPRESSED,
    UNFINISHED,
    count_finished,
)
from app.storage.tables import (
    activities,
    alert_activities,
    alerts,
    deliveries,
    rejected_deliveries,
    route_notices,
)

# Rows the worker will never send again: gone with their activity. A dead letter is
# the exception, kept while an operator may still retry it.
_SETTLED = (DELIVERED, SKIPPED, SUPPRESSED)


def _keeps_open_alert() -> sa.ColumnElement[bool]:
    """True for an activity in the history of an open alert."""
    return (
        sa.select(alert_activities.c.activity_id)
        .join(alerts, alerts.c.key == alert_activities.c.alert_key)
        .where(alert_activities.c.activity_id == activities.c.id, alerts.c.state == "open")
        .exists()
    )


def _keeps_outbox_work(dead_letter_cutoff: float | None) -> sa.ColumnElement[bool]:
    """True for an activity the outbox still needs: a delivery of it is pending or in
    flight, or is a dead letter that died at or after ``dead_letter_cutoff`` (an operator
    may still retry it, and the worker renders the message from the stored activity)."""
    d = deliveries.c
    needed: sa.ColumnElement[bool] = d.status.in_(UNFINISHED)
    if dead_letter_cutoff is not None:
        needed = sa.or_(needed, sa.and_(d.status == DEAD, d.updated_at >= dead_letter_cutoff))
    return sa.select(d.id).where(d.activity_id == activities.c.id, needed).exists()


def _finished(dead_letter_cutoff: float | None) -> sa.ColumnElement[bool]:
    """True for a delivery retention may delete once its activity is gone: delivered,
    skipped or suppressed, or a dead letter that died before ``dead_letter_cutoff``
    (None: every dead letter)."""
    d = deliveries.c
    dead: sa.ColumnElement[bool] = d.status == DEAD
    if dead_letter_cutoff is not None:
        dead = sa.and_(dead, d.updated_at < dead_letter_cutoff)
    return sa.or_(d.status.in_(_SETTLED), dead)


@dataclass(frozen=True)
class PrunedActivities:
    """What one batch of :func:`prune_activities_batch` deleted, and where the next
    batch starts (``after_id``; None when the whole table has been looked at)."""

    activities: int
    deliveries: int
    after_id: int | None = None


# How many activity ids one batch looks at, per row it may delete: bounds every
# transaction's read however few of the stored activities are old enough.
SCAN_FACTOR = 10


def prune_activities_batch(
    conn: Connection,
    cutoff: float,
    batch: int,
    *,
    dead_letter_cutoff: float | None = None,
    after_id: int | None = None,
) -> PrunedActivities:
    """Delete up to ``batch`` activities that arrived (``received_at``) before ``cutoff``
    and that no open alert and no unfinished delivery needs (see :func:`_keeps_outbox_work`).

    Retention counts from arrival, never from activityTime: an activity that NinjaOne
    dates long ago (a backfill, a replayed delivery, a device with a wrong clock) stays
    for the whole retention period, so its redelivery is still a duplicate.

    The batch looks only at the next ``batch * SCAN_FACTOR`` activities by id after
    ``after_id`` (``received_at`` has no index: the primary key bounds the read), and
    returns where the next batch starts.

    Their alert links and finished deliveries go with them, and so does a closed alert
    left with no history.
    """
    a = activities.c
    scan = max(batch, 1) * SCAN_FACTOR
    start = a.id > after_id if after_id is not None else sa.true()
    last = conn.execute(
        sa.select(a.id).where(start).order_by(a.id).offset(scan - 1).limit(1)
    ).scalar_one_or_none()
    window = start if last is None else sa.and_(start, a.id <= last)
    ids = list(
        conn.execute(
            sa.select(a.id)
            .where(
                window,
                a.received_at < cutoff,
                ~_keeps_open_alert(),
                ~_keeps_outbox_work(dead_letter_cutoff),
            )
            .order_by(a.id)
            .limit(batch)
        ).scalars()
    )
    # A full batch: the next one starts after its last id (the window may hold more).
    # Otherwise the window is done: the next batch starts after it, or nothing is left.
    after: int | None = ids[-1] if len(ids) == batch else last
    if not ids:
        return PrunedActivities(0, 0, after)
    keys = list(
        conn.execute(
            sa.select(alert_activities.c.alert_key)
            .where(alert_activities.c.activity_id.in_(ids))
            .distinct()
        ).scalars()
    )
    conn.execute(sa.delete(alert_activities).where(alert_activities.c.activity_id.in_(ids)))
    # The status is checked again here: a delivery re-queued (`deliveries replay`) since
    # the SELECT above stays; the worker then records it as a dead letter.
    d = deliveries.c
    outbox = conn.execute(
        sa.delete(deliveries)
        .where(d.activity_id.in_(ids), _finished(dead_letter_cutoff))
        .returning(d.destination, d.kind, d.status)
    ).all()
    count_finished(conn, outbox, -1)
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
    return PrunedActivities(len(ids), len(outbox), after)


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


def _activity_gone(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    return ~sa.select(activities.c.id).where(activities.c.id == column).exists()


def prune_deliveries_batch(
    conn: Connection, dead_letter_cutoff: float, batch: int, *, after_id: int = 0
) -> tuple[int, int | None]:
    """Look at the next ``batch`` deliveries after ``after_id`` (by id) and delete those
    finished whose activity is no longer stored: delivered ones, and dead letters that
    died before ``dead_letter_cutoff``. Pending and in-flight ones are never deleted.

    :func:`prune_activities_batch` deletes an activity's finished deliveries with it;
    this sweeps up those a prune of an earlier version left, or an activity deleted
    while its delivery was re-queued. Walking the ids in windows bounds every
    transaction, however large the outbox.

    :returns: how many were deleted, and the ``after_id`` of the next window (None at
        the end).
    """
    d = deliveries.c
    window = list(
        conn.execute(sa.select(d.id).where(d.id > after_id).order_by(d.id).limit(batch)).scalars()
    )
    if not window:
        return 0, None
    orphaned = sa.and_(_finished(dead_letter_cutoff), _activity_gone(d.activity_id))
    deleted = conn.execute(
        sa.delete(deliveries)
        .where(d.id >= window[0], d.id <= window[-1], orphaned)
        .returning(d.destination, d.kind, d.status)
    ).all()
    count_finished(conn, deleted, -1)
    return len(deleted), (window[-1] if len(window) == batch else None)


def prune_route_notices_batch(conn: Connection, batch: int) -> int:
    """Delete up to ``batch`` routes' alert states (``delivery_alerts``) of alerts that
    are resolved and whose opening and resolving activities are both gone; returns how
    many. An open one stays whatever its age: its RESET must still send "resolved".

    Without the state, a TRIGGERED older than the pruned RESET that arrives after all
    would notify; by then it is older than the retention period itself."""
    a = route_notices.c
    gone = sa.and_(
        a.state == "resolved",
        _activity_gone(a.opened_activity_id),
        sa.or_(a.resolved_activity_id.is_(None), _activity_gone(a.resolved_activity_id)),
    )
    keys = [
        (row.route, row.alert_key)
        for row in conn.execute(sa.select(a.route, a.alert_key).where(gone).limit(batch))
    ]
    if not keys:
        return 0
    # Checked again in the DELETE: an alert re-opened since the SELECT stays.
    deleted = conn.execute(
        sa.delete(route_notices).where(sa.tuple_(a.route, a.alert_key).in_(keys), gone)
    )
    return int(deleted.rowcount or 0)


def optimize(conn: Connection, *, analyze: bool = False) -> None:
    """Refresh the query planner's statistics after many rows changed.

    SQLite keeps no statistics on its own: without them it may pick a poor index for
    a filtered page. PostgreSQL's autovacuum keeps them; ``analyze`` forces it now.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("ANALYZE" if analyze else "PRAGMA optimize")
    elif analyze:
        conn.exec_driver_sql("ANALYZE")
