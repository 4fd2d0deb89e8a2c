"""Routing and delivery outbox: deliveries and each route's view of alerts.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("uid", sa.String(40), nullable=False),
        sa.Column("activity_id", sa.BigInteger, nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("destination", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("alert_key", sa.Text, nullable=True),
        sa.Column("refers_to", sa.String(40), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("lease_expires_at", sa.Float, nullable=True),
        sa.Column("leased_by", sa.String(200), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint(
            "activity_id",
            "route",
            "destination",
            "event",
            name="uq_deliveries_activity_id_route_destination_event",
        ),
        sa.UniqueConstraint("uid", name="uq_deliveries_uid"),
    )
    op.create_index(
        "ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_deliveries_created_at", "deliveries", ["created_at"])
    op.create_table(
        "delivery_alerts",
        sa.Column("route", sa.String(200)),
        sa.Column("alert_key", sa.String(300)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_activity_id", sa.BigInteger, nullable=False),
        sa.Column("resolved_activity_id", sa.BigInteger, nullable=True),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float, nullable=True),
        sa.Column("repeats", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state_activity_time", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("route", "alert_key", name="pk_delivery_alerts"),
    )


def downgrade() -> None:
    op.drop_table("delivery_alerts")
    op.drop_table("deliveries")
