"""Silences, operator actions, suppressed deliveries and the session's role.

``silences`` holds operators' silences (matchers as JSON, a time window, who and why);
``operator_actions`` records every operator action with the label of its token.
``deliveries`` gains ``suppressed_reason`` and ``silence_id``: a notification that a
silence or a device's maintenance held back is kept, in the terminal status
``suppressed``, with the reason. ``dashboard_sessions`` gains ``role`` (read or
operator) and ``actor`` (the token's label); sessions from before have them NULL and
count as read sessions.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("matchers", sa.Text, nullable=False),
        sa.Column("starts_at", sa.Float, nullable=False),
        sa.Column("ends_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("expired_at", sa.Float, nullable=True),
        sa.Column("expired_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_silences"),
    )
    op.create_index("ix_silences_ends_at", "silences", ["ends_at"])
    op.create_table(
        "operator_actions",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("alert_key", sa.String(300), nullable=True),
        sa.Column("target", sa.String(300), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_operator_actions"),
    )
    op.create_index("ix_operator_actions_alert_key_id", "operator_actions", ["alert_key", "id"])
    op.add_column("deliveries", sa.Column("suppressed_reason", sa.Text, nullable=True))
    op.add_column("deliveries", sa.Column("silence_id", sa.Integer, nullable=True))
    op.add_column("dashboard_sessions", sa.Column("role", sa.String(16), nullable=True))
    op.add_column("dashboard_sessions", sa.Column("actor", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dashboard_sessions") as batch:
        batch.drop_column("actor")
        batch.drop_column("role")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("silence_id")
        batch.drop_column("suppressed_reason")
    op.drop_index("ix_operator_actions_alert_key_id", table_name="operator_actions")
    op.drop_table("operator_actions")
    op.drop_index("ix_silences_ends_at", table_name="silences")
    op.drop_table("silences")
