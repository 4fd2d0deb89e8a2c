"""Alerts derived from CONDITION activities, cross-worker metric counters, search indexes.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEARCH_INDEXES = {
    "ix_activities_organization_id_id": ["organization_id", "id"],
    "ix_activities_location_id_id": ["location_id", "id"],
    "ix_activities_source_name_id": ["source_name", "id"],
    "ix_activities_activity_type_id": ["activity_type", "id"],
}


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("key", sa.String(300)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("acknowledged", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("device_id", sa.Integer, nullable=True),
        sa.Column("organization_id", sa.Integer, nullable=True),
        sa.Column("location_id", sa.Integer, nullable=True),
        sa.Column("severity", sa.Text, nullable=True),
        sa.Column("priority", sa.Text, nullable=True),
        sa.Column("activity_type", sa.Text, nullable=True),
        sa.Column("source_name", sa.Text, nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("opened_at", sa.Float, nullable=True),
        sa.Column("closed_at", sa.Float, nullable=True),
        sa.Column("last_activity_time", sa.Float, nullable=True),
        sa.Column("last_activity_id", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_alerts"),
    )
    op.create_index("ix_alerts_state_last_activity_time", "alerts", ["state", "last_activity_time"])
    op.create_index("ix_alerts_organization_id", "alerts", ["organization_id"])
    op.create_index("ix_alerts_device_id", "alerts", ["device_id"])
    op.create_table(
        "alert_activities",
        sa.Column("alert_key", sa.String(300)),
        sa.Column("activity_id", sa.BigInteger),
        sa.PrimaryKeyConstraint("alert_key", "activity_id", name="pk_alert_activities"),
    )
    op.create_index("ix_alert_activities_activity_id", "alert_activities", ["activity_id"])
    op.create_table(
        "metric_counters",
        sa.Column("name", sa.String(100)),
        sa.Column("labels", sa.String(500)),
        sa.Column("value", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", "labels", name="pk_metric_counters"),
    )
    for name, columns in SEARCH_INDEXES.items():
        op.create_index(name, "activities", columns)


def downgrade() -> None:
    for name in SEARCH_INDEXES:
        op.drop_index(name, table_name="activities")
    op.drop_table("metric_counters")
    op.drop_table("alert_activities")
    op.drop_table("alerts")
