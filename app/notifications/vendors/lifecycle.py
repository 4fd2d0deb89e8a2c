"""The ``acknowledge`` follow-up: an ACKNOWLEDGED sent on to the destinations that keep
incidents, so the on-call engineer sees the alert taken in PagerDuty or Opsgenie.

Enqueued (app.notifications.outbox) only for a route whose notice of the alert is open,
referring to the route's notification of the alert at the destination; claiming makes
it wait for that notification, and retrying a dead notification retries it too, as
with "resolved" (app.storage.notifications).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection, Row

from app.storage import notifications as store

# Kinds with an incident to acknowledge; the others hear nothing of an ACKNOWLEDGED.
ACKNOWLEDGING_KINDS = frozenset({"pagerduty", "opsgenie"})


def acknowledge_skip(conn: Connection, row: Row[Any]) -> str | None:
    """Why a claimed ``acknowledge`` is not sent, or None to send it: sent only after its
    notification was delivered, and only while the route's notice of the alert that
    notification opened is still open (an incident already resolved stays resolved)."""
    notification = store.notification_of(conn, row.refers_to) if row.refers_to else None
    if notification is None or notification.delivered_at is None:
        return "its notification of the alert was never delivered"
    notice = store.route_notice(conn, row.route, row.alert_key) if row.alert_key else None
    if (
        notice is None
        or notice.state != "open"
        or notice.opened_activity_id != notification.activity_id
    ):
        return "the alert was resolved before the acknowledgement was sent"
    return None
