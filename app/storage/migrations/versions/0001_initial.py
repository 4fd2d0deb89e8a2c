"""Activities, rejected deliveries, spec drift and task leases.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "activities",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("activity_time", sa.Float, nullable=True),
        sa.Column("device_id", sa.Integer, nullable=True),
        sa.Column("organization_id", sa.Integer, nullable=True),
        sa.Column("location_id", sa.Integer, nullable=True),
        sa.Column("activity_type", sa.Text, nullable=True),
        sa.Column("status_code", sa.Text, nullable=True),
        sa.Column("severity", sa.Text, nullable=True),
        sa.Column("priority", sa.Text, nullable=True),
        sa.Column("activity_result", sa.Text, nullable=True),
        sa.Column("series_uid", sa.Text, nullable=True),
        sa.Column("source_config_uid", sa.Text, nullable=True),
        sa.Column("source_name", sa.Text, nullable=True),
        sa.Column("user_id", sa.Integer, nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("source", sa.String(16), nullable=False, server_default="webhook"),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_activities"),
    )
    op.create_index("ix_activities_device_id_id", "activities", ["device_id", "id"])
    op.create_index("ix_activities_series_uid", "activities", ["series_uid"])
    op.create_index("ix_activities_activity_time", "activities", ["activity_time"])
    op.create_table(
        "rejected_deliveries",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("field", sa.Text, nullable=True),
        sa.Column("content_type", sa.Text, nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("body_bytes", sa.BigInteger, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name="pk_rejected_deliveries"),
    )
    op.create_index("ix_rejected_deliveries_received_at", "rejected_deliveries", ["received_at"])
    op.create_table(
        "spec_drift",
        sa.Column("field", sa.String(100)),
        sa.Column("value", sa.String(200)),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("field", "value", name="pk_spec_drift"),
    )
    op.create_table(
        "task_leases",
        sa.Column("name", sa.String(100)),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("last_run_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_task_leases"),
    )


def downgrade() -> None:
    op.drop_table("task_leases")
    op.drop_table("spec_drift")
    op.drop_table("rejected_deliveries")
    op.drop_table("activities")
