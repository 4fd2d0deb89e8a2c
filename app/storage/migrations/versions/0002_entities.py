"""Entity cache: organizations, locations, devices.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Integer, autoincrement=False),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("raw", sa.JSON, nullable=True),
        sa.Column("observed_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
    )
    op.create_table(
        "locations",
        sa.Column("id", sa.Integer, autoincrement=False),
        sa.Column("organization_id", sa.Integer, nullable=True),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("raw", sa.JSON, nullable=True),
        sa.Column("observed_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_locations"),
    )
    op.create_index("ix_locations_organization_id", "locations", ["organization_id"])
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, autoincrement=False),
        sa.Column("organization_id", sa.Integer, nullable=True),
        sa.Column("location_id", sa.Integer, nullable=True),
        sa.Column("display_name", sa.Text, nullable=True),
        sa.Column("system_name", sa.Text, nullable=True),
        sa.Column("node_class", sa.Text, nullable=True),
        sa.Column("offline", sa.Boolean, nullable=True),
        sa.Column("last_contact", sa.Float, nullable=True),
        sa.Column("raw", sa.JSON, nullable=True),
        sa.Column("observed_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
    )
    op.create_index("ix_devices_organization_id", "devices", ["organization_id"])
    op.create_index("ix_devices_location_id", "devices", ["location_id"])
    op.create_table(
        "ninjaone_checkpoints",
        sa.Column("name", sa.String(100)),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_ninjaone_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("ninjaone_checkpoints")
    op.drop_table("devices")
    op.drop_table("locations")
    op.drop_table("organizations")
