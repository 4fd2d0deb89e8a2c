"""Reminders, flapping and grouping (issue 14, item 5).

``delivery_alerts`` (a route's notice of an alert) gains ``remind_at``, when the next
reminder of the open alert is due (NULL: none), and ``reminders``, how many were sent;
the delivery worker scans the index on ``remind_at``. ``flapping_conditions`` holds, per
route, the conditions (a device and a condition's sourceConfigUid) that the worker found
flapping: since when, the firing that said so, and until when they stay quiet.
``deliveries`` gains ``group_key`` (a route's ``group_by`` values of the alert, NULL when
the route does not group): notifications of one route, destination and group that are
pending together are sent as one message.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("delivery_alerts", sa.Column("remind_at", sa.Float, nullable=True))
    op.add_column(
        "delivery_alerts",
        sa.Column("reminders", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_delivery_alerts_remind_at", "delivery_alerts", ["remind_at"])
    op.add_column("deliveries", sa.Column("group_key", sa.String(300), nullable=True))
    op.create_index("ix_deliveries_group_key", "deliveries", ["group_key", "status"])
    op.create_table(
        "flapping_conditions",
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("device_id", sa.BigInteger, nullable=False),
        sa.Column("source_config_uid", sa.String(200), nullable=False),
        sa.Column("flapping_since", sa.Float, nullable=False),
        sa.Column("marked_activity_id", sa.BigInteger, nullable=False),
        sa.Column("quiet_until", sa.Float, nullable=False),
        sa.Column("firings", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint(
            "route", "device_id", "source_config_uid", name="pk_flapping_conditions"
        ),
    )


def downgrade() -> None:
    op.drop_table("flapping_conditions")
    op.drop_index("ix_deliveries_group_key", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("group_key")
    op.drop_index("ix_delivery_alerts_remind_at", table_name="delivery_alerts")
    with op.batch_alter_table("delivery_alerts") as batch:
        batch.drop_column("reminders")
        batch.drop_column("remind_at")
