"""Entity state: deleted entities are kept, and every row says when and how it was refreshed.

``organizations``, ``locations`` and ``devices`` gain ``deleted_at`` (NinjaOne deleted
the entity: an event or a complete sync said so; the row stays, so history keeps its
name), ``refreshed_at`` and ``refreshed_by`` (``webhook``, ``fetch``, ``event`` or
``sync``). Rows stored before this migration have them NULL.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("organizations", "locations", "devices")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("deleted_at", sa.Float, nullable=True))
        op.add_column(table, sa.Column("refreshed_at", sa.Float, nullable=True))
        op.add_column(table, sa.Column("refreshed_by", sa.String(16), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            for column in ("refreshed_by", "refreshed_at", "deleted_at"):
                batch.drop_column(column)
