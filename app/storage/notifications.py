"""The delivery outbox: enqueueing, claiming with row locks, outcomes and the read side.

Deliveries move ``pending`` → ``delivering`` (leased to one worker until
``lease_expires_at``) → ``delivered`` or back to ``pending`` for a retry, or to
``dead`` (a dead letter). A delivery whose worker died is ``delivering`` with an
expired lease, and is taken again like a pending one.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from app.storage.activities import dialect_insert, insert_for
from app.storage.metrics import add_to_counter
from app.storage.prepared import Prepared
from app.storage.tables import (
    deliveries,
    devices,
    locations,
    metric_counters,
    organizations,
    route_notices,
)

PENDING, DELIVERING, DELIVERED, DEAD = "pending", "delivering", "delivered", "dead"
# Held back by a silence or a device's maintenance: recorded with the reason, never sent.
SUPPRESSED = "suppressed"
# Not sent because the alert's lifecycle had moved on (app.notifications.outbox's rules):
# last_error says why. Terminal, like delivered.
SKIPPED = "skipped"
STATUSES = (PENDING, DELIVERING, DELIVERED, DEAD, SUPPRESSED, SKIPPED)
UNFINISHED = (PENDING, DELIVERING)
FINISHED = (DELIVERED, DEAD, SKIPPED)
# last_error of a "resolved" follow-up held as a dead letter with its notification.
HELD_WITH_NOTIFICATION = "held: its notification is a dead letter (retrying it retries this too)"

# How many deliveries are delivered or dead, by destination and kind, is kept in
# ``metric_counters`` (row name FINISHED_COUNT), changed in the same transaction as
# the rows themselves: /metrics then never counts the outbox's whole history. Rows of
# a database from before these counts existed are counted once (FINISHED_COUNTED marks
# that this was done; see count_finished_once).
FINISHED_COUNT = "outbox_finished"
FINISHED_COUNTED = "outbox_finished_counted"


def cached_entities(conn: Connection, device_id: int) -> dict[str, Any]:
    """What the entity cache knows about a device, its organization and location,
    keyed ``device.<field>``, ``organization.name``, ``location.name``."""
    d, o, loc = devices.c, organizations.c, locations.c
    row = conn.execute(
        sa.select(
            d.display_name,
            d.system_name,
            d.node_class,
            d.organization_id,
            d.location_id,
            o.name.label("organization_name"),
            loc.name.label("location_name"),
        )
        .select_from(
            devices.outerjoin(organizations, o.id == d.organization_id).outerjoin(
                locations, loc.id == d.location_id
            )
        )
        .where(d.id == device_id)
    ).first()
    if row is None:
        return {}
    return {
        "device.displayName": row.display_name,
        "device.systemName": row.system_name,
        "device.nodeClass": row.node_class,
        "device.organizationId": row.organization_id,
        "device.locationId": row.location_id,
        "organization.name": row.organization_name,
        "location.name": row.location_name,
    }


def enqueue(
    conn: Connection,
    *,
    activity_id: int,
    route: str,
    destination: str,
    kind: str,
    event: str,
    alert_key: str | None,
    refers_to: str | None,
    now: float,
    suppressed_reason: str | None = None,
    silence_id: int | None = None,
    due_at: float | None = None,
    group_key: str | None = None,
) -> str | None:
    """Add a pending delivery, due at ``due_at`` (a route's wait) or ``now``; returns its
    uid, or None when it was enqueued already.

    With ``suppressed_reason`` the delivery is recorded as ``suppressed`` instead, which
    no worker takes. The unique (activity, route, destination, event) constraint makes
    this idempotent.
    """
    uid = str(uuid.uuid4())
    # Ingest runs this for every route a new activity matches: see app.storage.prepared.
    inserted = _ENQUEUE.execute(
        conn,
        {
            "uid": uid,
            "activity_id": activity_id,
            "route": route,
            "destination": destination,
            "kind": kind,
            "event": event,
            "alert_key": alert_key,
            "refers_to": refers_to,
            "status": PENDING if suppressed_reason is None else SUPPRESSED,
            "suppressed_reason": suppressed_reason,
            "silence_id": silence_id,
            "group_key": group_key,
            "attempts": 0,
            "next_attempt_at": now if due_at is None else due_at,
            "created_at": now,
            "updated_at": now,
        },
    )
    return str(inserted[0]["uid"]) if inserted else None


def _enqueue_statement(dialect: str) -> Any:
    return insert_for(dialect, deliveries).on_conflict_do_nothing().returning(deliveries.c.uid)


def _open_notice_statement(dialect: str) -> Any:
    return (
        insert_for(dialect, route_notices).on_conflict_do_nothing().returning(route_notices.c.route)
    )


_ENQUEUE = Prepared(_enqueue_statement)
_OPEN_NOTICE = Prepared(_open_notice_statement)


def _not_older(time_column: Any, activity_time: float | None) -> sa.ColumnElement[bool]:
    """True unless both times are known and ``activity_time`` is older."""
    if activity_time is None:
        return sa.true()
    return sa.or_(time_column.is_(None), time_column <= activity_time)


def open_route_notice(
    conn: Connection,
    route: str,
    alert_key: str,
    activity_id: int,
    activity_time: float | None,
    now: float,
) -> bool:
    """Record a TRIGGERED for ``route``; True when it opens the alert (first time, or
    again after a RESET), False for a repeat of an alert the route already notified,
    or for a trigger older than the RESET that closed it (a late delivery).

    The primary key (route, alert_key) and the conditional update decide, so two
    concurrent repeats never both notify.
    """
    a = route_notices.c
    inserted = _OPEN_NOTICE.execute(
        conn,
        {
            "route": route,
            "alert_key": alert_key,
            "state": "open",
            "opened_activity_id": activity_id,
            "opened_at": now,
            "repeats": 0,
            "reminders": 0,
            "state_activity_time": activity_time,
        },
    )
    if inserted:
        return True
    reopened = conn.execute(
        sa.update(route_notices)
        .where(
            a.route == route,
            a.alert_key == alert_key,
            a.state == "resolved",
            _not_older(a.state_activity_time, activity_time),
        )
        .values(
            state="open",
            opened_activity_id=activity_id,
            opened_at=now,
            resolved_activity_id=None,
            resolved_at=None,
            repeats=0,
            state_activity_time=activity_time,
            remind_at=None,
            reminders=0,
        )
    )
    if reopened.rowcount:
        return True
    conn.execute(
        sa.update(route_notices)
        .where(a.route == route, a.alert_key == alert_key)
        .values(repeats=a.repeats + 1)
    )
    return False


def resolve_route_notice(
    conn: Connection,
    route: str,
    alert_key: str,
    activity_id: int,
    activity_time: float | None,
    now: float,
    *,
    remember: bool,
) -> int | None:
    """Close the route's open alert; returns the activity that opened it, or None when
    the route had no open alert under ``alert_key`` (or the RESET is older than the
    TRIGGERED that opened it).

    With ``remember``, a RESET for an alert the route never saw is recorded as a
    resolved alert, so a TRIGGERED that was sent earlier but arrives later stays quiet.
    """
    a = route_notices.c
    opened_by = conn.execute(
        sa.update(route_notices)
        .where(
            a.route == route,
            a.alert_key == alert_key,
            a.state == "open",
            _not_older(a.state_activity_time, activity_time),
        )
        .values(
            state="resolved",
            resolved_activity_id=activity_id,
            resolved_at=now,
            state_activity_time=activity_time,
            remind_at=None,
        )
        .returning(a.opened_activity_id)
    ).scalar()
    if opened_by is None and remember:
        conn.execute(
            dialect_insert(conn, route_notices)
            .values(
                route=route,
                alert_key=alert_key,
                state="resolved",
                opened_activity_id=activity_id,
                opened_at=now,
                resolved_activity_id=activity_id,
                resolved_at=now,
                repeats=0,
                state_activity_time=activity_time,
            )
            .on_conflict_do_nothing()
        )
    return opened_by


def notification_uid(
    conn: Connection, activity_id: int, route: str, destination: str
) -> str | None:
    """The uid of the notification ``route`` sent to ``destination`` for an activity."""
    c = deliveries.c
    return conn.execute(
        sa.select(c.uid).where(
            c.activity_id == activity_id,
            c.route == route,
            c.destination == destination,
            c.event == "notify",
        )
    ).scalar()


def hold_resolved_of_dead(conn: Connection, now: float) -> int:
    """Make every pending "resolved" follow-up whose notification is a dead letter a dead
    letter too (``HELD_WITH_NOTIFICATION``); returns how many.

    A follow-up must never reach a destination that did not get its notification, and
    a follow-up left pending behind a dead letter would wait for ever (and count as
    backlog). Retrying the notification retries the follow-up with it (:func:`requeue`).
    """
    c = deliveries.c
    original = deliveries.alias("original")
    waiting = sa.and_(
        c.status == PENDING,
        c.refers_to.is_not(None),
        sa.exists().where(original.c.uid == c.refers_to, original.c.status == DEAD),
    )
    candidates = sa.select(c.id).where(waiting)
    if conn.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    held = conn.execute(
        sa.update(deliveries)
        .where(c.id.in_(candidates.scalar_subquery()), waiting)
        .values(
            status=DEAD,
            updated_at=now,
            lease_expires_at=None,
            last_error=HELD_WITH_NOTIFICATION,
            last_status_code=None,
        )
        .returning(c.destination, c.kind, c.status)
    ).all()
    count_finished(conn, held, 1)
    return len(held)


def claim(
    conn: Connection,
    *,
    now: float,
    lease: float,
    holder: str,
    limit: int,
    group_waits: Mapping[str, float] | None = None,
) -> list[Row[Any]]:
    """Take up to ``limit`` due deliveries for ``holder`` until ``now + lease``.

    A grouped notification (``group_key`` set) is due only as the first pending one of its
    route, destination and group; it is taken with the rest of its group that are
    pending and due within the route's group wait (``group_waits``), in this
    transaction, so racing workers never split a group.

    A "resolved" follow-up is not due while its notification is pending, in flight or a
    dead letter (:func:`hold_resolved_of_dead` runs first and makes it a dead letter too):
    a destination never hears of the reset before the notification. Once the
    notification is finished otherwise (delivered, skipped, suppressed), the worker
    decides what the follow-up does (app.notifications.outbox).

    On PostgreSQL the candidate rows are locked with ``FOR UPDATE SKIP LOCKED``, so
    concurrent workers on any host take disjoint sets without waiting on each other.
    SQLite has one writer at a time, which makes the same UPDATE atomic there.
    """
    hold_resolved_of_dead(conn, now)
    c = deliveries.c
    original = deliveries.alias("original")
    due = sa.and_(
        sa.or_(
            sa.and_(c.status == PENDING, c.next_attempt_at <= now),
            sa.and_(c.status == DELIVERING, c.lease_expires_at < now),
        ),
        sa.or_(
            c.refers_to.is_(None),
            ~sa.exists().where(
                original.c.uid == c.refers_to,
                original.c.status.in_([PENDING, DELIVERING, DEAD]),
            ),
        ),
        sa.or_(c.group_key.is_(None), ~_earlier_in_group(c)),
    )
    candidates = sa.select(c.id).where(due).order_by(c.next_attempt_at, c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    stmt = (
        sa.update(deliveries)
        .where(c.id.in_(candidates.scalar_subquery()), due)
        .values(
            status=DELIVERING,
            attempts=c.attempts + 1,
            lease_expires_at=now + lease,
            leased_by=holder,
            updated_at=now,
        )
        .returning(*deliveries.c)
    )
    taken = list(conn.execute(stmt).all())
    if group_waits:
        for leader in list(taken):
            wait = group_waits.get(leader.route)
            if leader.group_key is not None and leader.event == "notify" and wait is not None:
                taken.extend(_claim_group(conn, leader, now + wait, now, lease, holder))
    return taken


def _earlier_in_group(c: Any) -> sa.Exists:
    """A pending notification of the same route, destination and group that comes first."""
    sibling = deliveries.alias("sibling")
    s = sibling.c
    return sa.exists().where(
        s.group_key == c.group_key,
        s.status == PENDING,
        s.route == c.route,
        s.destination == c.destination,
        s.event == "notify",
        sa.or_(
            s.next_attempt_at < c.next_attempt_at,
            sa.and_(s.next_attempt_at == c.next_attempt_at, s.id < c.id),
        ),
    )


def _claim_group(
    conn: Connection, leader: Row[Any], due_by: float, now: float, lease: float, holder: str
) -> list[Row[Any]]:
    """Take the pending notifications of ``leader``'s group that are due by ``due_by``."""
    c = deliveries.c
    where = sa.and_(
        c.group_key == leader.group_key,
        c.status == PENDING,
        c.route == leader.route,
        c.destination == leader.destination,
        c.event == "notify",
        c.next_attempt_at <= due_by,
    )
    candidates = sa.select(c.id).where(where)
    if conn.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    return list(
        conn.execute(
            sa.update(deliveries)
            .where(c.id.in_(candidates.scalar_subquery()), where)
            .values(
                status=DELIVERING,
                attempts=c.attempts + 1,
                lease_expires_at=now + lease,
                leased_by=holder,
                updated_at=now,
            )
            .returning(*deliveries.c)
        ).all()
    )


def notification_of(conn: Connection, uid: str) -> Row[Any] | None:
    """The outbox row with public id ``uid`` (a follow-up's notification), or None."""
    return conn.execute(sa.select(deliveries).where(deliveries.c.uid == uid)).first()


def route_notice(conn: Connection, route: str, alert_key: str) -> Row[Any] | None:
    """The route's notice of an alert (state, opened_activity_id, …), or None."""
    a = route_notices.c
    return conn.execute(
        sa.select(route_notices).where(a.route == route, a.alert_key == alert_key)
    ).first()


def arm_reminder(
    conn: Connection, route: str, alert_key: str, activity_id: int, remind_at: float
) -> None:
    """Make the first reminder of the route's open alert (opened by ``activity_id``) due
    at ``remind_at``, unless one is due already (another destination was notified first)."""
    a = route_notices.c
    conn.execute(
        sa.update(route_notices)
        .where(
            a.route == route,
            a.alert_key == alert_key,
            a.state == "open",
            a.opened_activity_id == activity_id,
            a.remind_at.is_(None),
        )
        .values(remind_at=remind_at)
    )


def due_reminders(conn: Connection, routes: Sequence[str], now: float, limit: int) -> list[Any]:
    """Open notices of ``routes`` whose reminder is due (route, alert_key,
    opened_activity_id, remind_at, reminders), through the index on remind_at."""
    a = route_notices.c
    return list(
        conn.execute(
            sa.select(a.route, a.alert_key, a.opened_activity_id, a.remind_at, a.reminders)
            .where(a.remind_at <= now, a.state == "open", a.route.in_(list(routes)))
            .order_by(a.remind_at)
            .limit(limit)
        ).all()
    )


def take_reminder(
    conn: Connection, route: str, alert_key: str, due: float, next_at: float
) -> int | None:
    """Move a due reminder (due at ``due``) on to ``next_at``; returns its number, or None
    when another worker took it first or the alert was resolved meanwhile."""
    a = route_notices.c
    return conn.execute(
        sa.update(route_notices)
        .where(a.route == route, a.alert_key == alert_key, a.state == "open", a.remind_at == due)
        .values(remind_at=next_at, reminders=a.reminders + 1)
        .returning(a.reminders)
    ).scalar()


def delivered_notifications(conn: Connection, activity_id: int, route: str) -> list[Any]:
    """The route's delivered notifications of an activity (destination, kind, uid)."""
    c = deliveries.c
    return list(
        conn.execute(
            sa.select(c.destination, c.kind, c.uid).where(
                c.activity_id == activity_id,
                c.route == route,
                c.event == "notify",
                c.status == DELIVERED,
            )
        ).all()
    )


def mark_skipped(conn: Connection, delivery_id: int, holder: str, now: float, reason: str) -> bool:
    """Record that a claimed delivery is not to be sent (``reason`` says why); False when
    the lease had passed to another worker meanwhile."""
    c = deliveries.c
    changed = conn.execute(
        sa.update(deliveries)
        .where(c.id == delivery_id, c.leased_by == holder, c.status == DELIVERING)
        .values(
            status=SKIPPED,
            updated_at=now,
            lease_expires_at=None,
            last_error=reason,
            last_status_code=None,
        )
        .returning(c.destination, c.kind, c.status)
    ).all()
    count_finished(conn, changed, 1)
    return bool(changed)


def _finished_labels(destination: str, kind: str, status: str) -> str:
    labels = {"destination": destination, "kind": kind, "status": status}
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def count_finished(conn: Connection, rows: Iterable[Sequence[Any]], sign: int) -> None:
    """Add ``sign`` (1 or -1) per (destination, kind, status) row to the finished counts;
    call it in the transaction that moved those rows into (1) or out of (-1) a finished
    status, or deleted them (-1)."""
    tally = Counter((str(r[0]), str(r[1]), str(r[2])) for r in rows)
    for (destination, kind, status), n in sorted(tally.items()):
        if status in FINISHED:
            add_to_counter(
                conn, FINISHED_COUNT, _finished_labels(destination, kind, status), sign * n
            )


def finished_counted(conn: Connection) -> bool:
    """True once :func:`count_finished_once` has run on this database."""
    m = metric_counters.c
    found = conn.execute(sa.select(m.value).where(m.name == FINISHED_COUNTED)).first()
    return found is not None


def count_finished_once(conn: Connection) -> None:
    """Set the finished counts from the rows themselves (one scan of the outbox, once per
    database), unless that was done already; call it in a write transaction.

    The write comes first: on SQLite it takes the write lock, and on PostgreSQL the
    table lock waits for transactions that change deliveries and holds off new ones,
    so no status change falls between the count and the counters."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE deliveries IN SHARE MODE")
    m = metric_counters.c
    marked = conn.execute(
        dialect_insert(conn, metric_counters)
        .values(name=FINISHED_COUNTED, labels="{}", value=1.0)
        .on_conflict_do_nothing(index_elements=[m.name, m.labels])
    )
    if not marked.rowcount:
        return
    conn.execute(sa.delete(metric_counters).where(m.name == FINISHED_COUNT))
    c = deliveries.c
    counted = conn.execute(
        sa.select(c.destination, c.kind, c.status, sa.func.count())
        .where(c.status.in_(FINISHED))
        .group_by(c.destination, c.kind, c.status)
    ).all()
    for destination, kind, status, n in counted:
        add_to_counter(conn, FINISHED_COUNT, _finished_labels(destination, kind, status), n)


def mark_delivered(
    conn: Connection, delivery_id: int, holder: str, now: float, status_code: int | None
) -> bool:
    """Record success; False when the lease had passed to another worker meanwhile."""
    c = deliveries.c
    changed = conn.execute(
        sa.update(deliveries)
        .where(c.id == delivery_id, c.leased_by == holder, c.status == DELIVERING)
        .values(
            status=DELIVERED,
            delivered_at=now,
            updated_at=now,
            lease_expires_at=None,
            last_status_code=status_code,
            last_error=None,
        )
        .returning(c.destination, c.kind, c.status)
    ).all()
    count_finished(conn, changed, 1)
    return bool(changed)


def mark_failed(
    conn: Connection,
    delivery_id: int,
    holder: str,
    now: float,
    *,
    error: str,
    status_code: int | None,
    retry_at: float | None,
) -> bool:
    """Record a failed attempt: pending again at ``retry_at``, or a dead letter when
    ``retry_at`` is None. False when the lease had passed to another worker."""
    c = deliveries.c
    changed = conn.execute(
        sa.update(deliveries)
        .where(c.id == delivery_id, c.leased_by == holder, c.status == DELIVERING)
        .values(
            status=PENDING if retry_at is not None else DEAD,
            next_attempt_at=retry_at if retry_at is not None else c.next_attempt_at,
            updated_at=now,
            lease_expires_at=None,
            last_error=error,
            last_status_code=status_code,
        )
        .returning(c.destination, c.kind, c.status)
    ).all()
    count_finished(conn, changed, 1)
    return bool(changed)


@dataclass(frozen=True)
class NotificationFilter:
    """Which deliveries a listing or a re-send covers. None means any."""

    since: float | None = None
    route: str | None = None
    destination: str | None = None
    statuses: Sequence[str] | None = None
    activity_id: int | None = None
    # The delivery's public id (``Delivery.id``), to act on one delivery.
    uid: str | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        c = deliveries.c
        clauses: list[sa.ColumnElement[bool]] = []
        if self.since is not None:
            clauses.append(c.created_at >= self.since)
        if self.route is not None:
            clauses.append(c.route == self.route)
        if self.destination is not None:
            clauses.append(c.destination == self.destination)
        if self.statuses:
            clauses.append(c.status.in_(list(self.statuses)))
        if self.activity_id is not None:
            clauses.append(c.activity_id == self.activity_id)
        if self.uid is not None:
            clauses.append(c.uid == self.uid)
        return clauses


def list_notifications(
    conn: Connection, flt: NotificationFilter, *, limit: int, before_id: int | None = None
) -> list[Row[Any]]:
    """Deliveries matching ``flt``, newest first, below ``before_id`` when given."""
    c = deliveries.c
    stmt = sa.select(deliveries).where(*flt.where())
    if before_id is not None:
        stmt = stmt.where(c.id < before_id)
    return list(conn.execute(stmt.order_by(c.id.desc()).limit(limit)).all())


def count_notifications(conn: Connection, flt: NotificationFilter) -> int:
    """How many deliveries match ``flt`` (the dashboard's dead-letter count)."""
    stmt = sa.select(sa.func.count()).select_from(deliveries).where(*flt.where())
    return int(conn.execute(stmt).scalar() or 0)


def requeue(conn: Connection, flt: NotificationFilter, now: float) -> int:
    """Make matching deliveries pending again, now, with a fresh attempt budget.

    A re-sent delivery keeps its uid: it is the same message, so a destination that
    received it already can recognise it. A notification's "resolved" follow-ups that
    are dead letters come back with it (they were held with it, or failed on their
    own), so a retried notification is never left without its follow-up.
    """
    c = deliveries.c
    requeued = 0
    notifications: list[str] = []
    wheres: list[list[sa.ColumnElement[bool]]] = [flt.where()]
    while wheres:
        where = wheres.pop()
        # One statement per finished status, so each knows the status its rows leave.
        for status in FINISHED:
            rows = conn.execute(
                sa.update(deliveries)
                .where(*where, c.status == status)
                .values(
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    lease_expires_at=None,
                    leased_by=None,
                    updated_at=now,
                )
                .returning(c.destination, c.kind, c.uid, c.refers_to)
            ).all()
            count_finished(conn, [(r[0], r[1], status) for r in rows], -1)
            requeued += len(rows)
            notifications.extend(r[2] for r in rows if r[3] is None)
        if notifications:
            wheres.append([c.refers_to.in_(notifications), c.status == DEAD])
            notifications = []
    return requeued


def counts_by_destination(conn: Connection) -> list[tuple[str, str, str, int]]:
    """(destination, kind, status, count) for every combination present, ordered by
    destination and status.

    Pending and in-flight rows are counted through the status index (their number is
    the backlog, not the history); delivered and dead ones are read from the counts
    kept with every change (see :func:`count_finished`). Call :func:`count_finished_once`
    first on a database that may predate those counts."""
    c = deliveries.c
    found: list[tuple[str, str, str, int]] = [
        (str(r[0]), str(r[1]), str(r[2]), int(r[3]))
        for r in conn.execute(
            sa.select(c.destination, c.kind, c.status, sa.func.count())
            .where(c.status.in_(UNFINISHED))
            .group_by(c.destination, c.kind, c.status)
        )
    ]
    m = metric_counters.c
    for labels, value in conn.execute(
        sa.select(m.labels, m.value).where(m.name == FINISHED_COUNT, m.value > 0)
    ):
        parsed = json.loads(labels)
        found.append((parsed["destination"], parsed["kind"], parsed["status"], int(value)))
    return sorted(found, key=lambda r: (r[0], r[2], r[1]))


def queue_stats(conn: Connection) -> tuple[int, float | None]:
    """How many deliveries wait (pending or in flight) and the oldest one's creation time."""
    c = deliveries.c
    row = conn.execute(
        sa.select(sa.func.count(), sa.func.min(c.created_at)).where(c.status.in_(UNFINISHED))
    ).one()
    return int(row[0] or 0), row[1]
