"""The read side of delivery, for the API, the dashboard and /metrics.

- :func:`activity_notifications` — an activity's deliveries (the dashboard and
  GET /activities/{id}/deliveries);
- :func:`notification_page` — deliveries by status/route, e.g. ``status=("dead",)`` for the
  dead letters (GET /deliveries);
- :func:`notification_metrics` — counts by destination and outcome, queue depth and the
  oldest pending delivery's age, for /metrics.

And the one write an operator makes: :func:`retry_dead_letters` (``ninjahook deliveries
retry`` and the dashboard's "retry") and :func:`requeue_notifications` (``… replay``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.engine import Row

from app.paging import page_of
from app.state import AppState
from app.storage import activities as activity_store
from app.storage import notifications as store
from app.storage.db import Database
from app.timeparse import iso


def _iso(value: float | None) -> str | None:
    return iso(value) if value is not None else None


def notification_record(row: Row[Any]) -> dict[str, Any]:
    """A Delivery (webhook.yaml) from an outbox row."""
    return {
        "id": row.uid,
        "seq": row.id,
        "activityId": row.activity_id,
        "route": row.route,
        "destination": row.destination,
        "kind": row.kind,
        "event": row.event,
        "alertKey": row.alert_key,
        "refersTo": row.refers_to,
        "status": row.status,
        "attempts": row.attempts,
        "nextAttemptAt": _iso(row.next_attempt_at) if row.status == store.PENDING else None,
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
        "deliveredAt": _iso(row.delivered_at),
        "lastError": row.last_error,
        "lastStatusCode": row.last_status_code,
        "suppressedReason": row.suppressed_reason,
        "silenceId": row.silence_id,
    }


def activity_notifications(state: AppState, activity_id: int) -> list[dict[str, Any]] | None:
    """Every delivery of one activity, oldest first; None when the activity is not stored."""
    with state.db.connect() as conn:
        if not activity_store.existing_activity_ids(conn, [activity_id]):
            return None
        rows = store.list_notifications(
            conn, store.NotificationFilter(activity_id=activity_id), limit=1000
        )
    return [notification_record(r) for r in reversed(rows)]


def notification_page(
    state: AppState, flt: store.NotificationFilter, *, limit: int, before_seq: int | None
) -> dict[str, Any]:
    """One page of deliveries, newest first, with the cursor of the next page."""
    with state.db.connect() as conn:
        rows = store.list_notifications(conn, flt, limit=limit + 1, before_id=before_seq)
    return page_of(rows, limit, notification_record, "seq")


def dead_letters(
    state: AppState, *, limit: int = 50, before_seq: int | None = None
) -> dict[str, Any]:
    """The dead letters, newest first (a :func:`notification_page`)."""
    return notification_page(
        state, store.NotificationFilter(statuses=(store.DEAD,)), limit=limit, before_seq=before_seq
    )


def dead_letter_count(state: AppState) -> int:
    """How many dead letters there are."""
    with state.db.connect() as conn:
        return store.count_notifications(conn, store.NotificationFilter(statuses=(store.DEAD,)))


def requeue_notifications(
    db: Database, flt: store.NotificationFilter, now: float | None = None
) -> int:
    """Queue the finished (delivered or dead) deliveries matching ``flt`` again, due now,
    with a fresh attempt budget; returns how many. Each keeps its delivery id, so a
    destination that has it already can recognise the repeat.

    Pending and in-flight deliveries are left alone: they are on their way.
    """
    with db.begin() as conn:
        return store.requeue(conn, flt, time.time() if now is None else now)


def retry_dead_letters(
    db: Database, flt: store.NotificationFilter, now: float | None = None
) -> int:
    """Queue the dead letters matching ``flt`` again (see :func:`requeue_notifications`);
    whatever statuses ``flt`` names, only dead letters are touched."""
    return requeue_notifications(db, replace(flt, statuses=(store.DEAD,)), now)


@dataclass(frozen=True)
class NotificationCount:
    """How many deliveries to one destination are in one status."""

    destination: str
    kind: str
    status: str
    count: int


@dataclass(frozen=True)
class NotificationMetrics:
    """What /metrics exposes about delivery.

    ``counts``: by destination, kind and status (pending, delivering, delivered,
    dead); ``queue_depth``: deliveries pending or in flight;
    ``oldest_pending_age``: seconds since the oldest of those was enqueued (0 when none).
    """

    counts: tuple[NotificationCount, ...]
    queue_depth: int
    oldest_pending_age: float


def notification_metrics(state: AppState, now: float | None = None) -> NotificationMetrics:
    """Counts for /metrics (see :class:`NotificationMetrics`)."""
    with state.db.connect() as conn:
        counted = store.finished_counted(conn)
    if not counted:  # once per database: count the delivered and dead rows it has
        with state.db.begin() as conn:
            store.count_finished_once(conn)
    with state.db.connect() as conn:
        counts = store.counts_by_destination(conn)
        depth, oldest = store.queue_stats(conn)
    now = time.time() if now is None else now
    return NotificationMetrics(
        counts=tuple(NotificationCount(*row) for row in counts),
        queue_depth=depth,
        oldest_pending_age=max(0.0, now - oldest) if oldest is not None else 0.0,
    )
