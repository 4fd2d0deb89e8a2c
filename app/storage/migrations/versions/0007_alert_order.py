"""Alert links carry the fold's ordering key and inputs: out-of-order activities cost O(1).

An activity that arrives out of activityTime order used to refold its alert's whole
history. Every alert column is decided by a few specific events (the last TRIGGERED,
the last RESET before it, the first TRIGGERED after that, the latest non-null device…),
so with the ordering key, the status class and the non-null values in the link rows,
and an index per question, each is one index seek (see app.alerts.service).

``alert_activities`` gains ``order_time`` (activityTime, or received_at without one),
``kind`` (T / R / A / NULL), ``severity``, ``device_id``, ``organization_id``,
``location_id``, ``source_name`` and ``message_set``, filled here from the stored
activities, an index on (alert_key, kind, order_time, activity_id) and one partial
index on (alert_key, order_time, activity_id) per value column where it is not null.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

VALUE_COLUMNS = {
    "severity": sa.Text,
    "device_id": sa.Integer,
    "organization_id": sa.Integer,
    "location_id": sa.Integer,
    "source_name": sa.Text,
    "message_set": sa.SmallInteger,
}
KIND_INDEX = "ix_alert_activities_alert_key_kind_order"

# The same classes as app.alerts.service (TRIGGERED, RESET_CODES, ACKNOWLEDGED).
_KIND = (
    "CASE a.status_code WHEN 'TRIGGERED' THEN 'T' "
    "WHEN 'RESET' THEN 'R' WHEN 'CUSTOM_HEALTH_STATUS_RESET' THEN 'R' "
    "WHEN 'RESET_BY_PSA_TICKET_CALLBACK' THEN 'R' "
    "WHEN 'ACKNOWLEDGED' THEN 'A' END"
)
_FROM_ACTIVITY = {
    "order_time": "COALESCE(a.activity_time, a.received_at)",
    "kind": _KIND,
    "severity": "a.severity",
    "device_id": "a.device_id",
    "organization_id": "a.organization_id",
    "location_id": "a.location_id",
    "source_name": "a.source_name",
    "message_set": "CASE WHEN a.message IS NULL THEN NULL ELSE 1 END",
}


def upgrade() -> None:
    op.add_column("alert_activities", sa.Column("order_time", sa.Float, nullable=True))
    op.add_column("alert_activities", sa.Column("kind", sa.String(1), nullable=True))
    for name, type_ in VALUE_COLUMNS.items():
        op.add_column("alert_activities", sa.Column(name, type_, nullable=True))
    # Fill the links stored before this migration from their activities.
    assignments = ", ".join(
        f"{column} = (SELECT {expression} FROM activities a "
        "WHERE a.id = alert_activities.activity_id)"
        for column, expression in _FROM_ACTIVITY.items()
    )
    op.execute(f"UPDATE alert_activities SET {assignments}")
    op.create_index(
        KIND_INDEX, "alert_activities", ["alert_key", "kind", "order_time", "activity_id"]
    )
    for name in VALUE_COLUMNS:
        present = sa.text(f"{name} IS NOT NULL")
        op.create_index(
            f"ix_alert_activities_{name}_order",
            "alert_activities",
            ["alert_key", "order_time", "activity_id"],
            sqlite_where=present,
            postgresql_where=present,
        )


def downgrade() -> None:
    for name in VALUE_COLUMNS:
        op.drop_index(f"ix_alert_activities_{name}_order", table_name="alert_activities")
    op.drop_index(KIND_INDEX, table_name="alert_activities")
    with op.batch_alter_table("alert_activities") as batch:
        for name in ("order_time", "kind", *VALUE_COLUMNS):
            batch.drop_column(name)
