"""Alembic environment: runs on the connection that Database.migrate passes (app.storage.db)."""

from __future__ import annotations

from alembic import context

from app.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through `ninjahook migrate` (app.storage.db.Database.migrate)"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
