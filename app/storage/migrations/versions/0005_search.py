"""Text search and time ranges on /activities: a trigram index for ``q``, (activity_time, id).

``q`` is a case-insensitive substring of message or subject. A B-tree cannot serve that,
so each backend gets its own trigram index:

- PostgreSQL: pg_trgm GIN indexes on message and on subject, used by ``ILIKE`` directly
  (pg_trgm is a trusted extension since PostgreSQL 13, so the database owner may create it).
- SQLite: an FTS5 table with the trigram tokenizer (SQLite >= 3.34), an external-content
  index over ``activities`` kept in sync by triggers: one FTS row per activity that has
  a message or a subject. Retention deletes in batches; the delete trigger follows it.

The FTS table, its shadow tables and its triggers are not in app/storage/tables.py (SQLAlchemy
cannot describe them); tests/test_migrations.py leaves exactly those names out of its
comparison. The GIN indexes are in tables.py, for PostgreSQL only.

``ix_activities_activity_time`` becomes ``(activity_time, id)``: a time-range page picks
its newest ids from the index alone (on SQLite ``id`` is not the rowid, so the old index
needed a table read per row in the range just to learn the id).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlite3

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

FTS_TABLE = "activities_fts"
HAS_TEXT_NEW = "new.message IS NOT NULL OR new.subject IS NOT NULL"
HAS_TEXT_OLD = "old.message IS NOT NULL OR old.subject IS NOT NULL"
# The FTS "delete" command must be given the values that were indexed, hence old.*.
FTS_DELETE_OLD = (
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, message, subject) "
    "VALUES ('delete', old.id, old.message, old.subject);"
)
FTS_INSERT_NEW = (
    f"INSERT INTO {FTS_TABLE}(rowid, message, subject) VALUES (new.id, new.message, new.subject);"
)
SQLITE_TRIGGERS = {
    "activities_fts_insert": f"AFTER INSERT ON activities WHEN {HAS_TEXT_NEW} "
    f"BEGIN {FTS_INSERT_NEW} END",
    "activities_fts_delete": f"AFTER DELETE ON activities WHEN {HAS_TEXT_OLD} "
    f"BEGIN {FTS_DELETE_OLD} END",
    # Nothing updates message or subject today; this keeps the index right if that changes.
    "activities_fts_update": "AFTER UPDATE OF message, subject ON activities "
    "BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, message, subject) "
    f"SELECT 'delete', old.id, old.message, old.subject WHERE {HAS_TEXT_OLD}; "
    f"INSERT INTO {FTS_TABLE}(rowid, message, subject) "
    f"SELECT new.id, new.message, new.subject WHERE {HAS_TEXT_NEW}; END",
}
PG_TRIGRAM_INDEXES = {
    "ix_activities_message_trgm": "message",
    "ix_activities_subject_trgm": "subject",
}


def upgrade() -> None:
    op.drop_index("ix_activities_activity_time", table_name="activities")
    op.create_index("ix_activities_activity_time_id", "activities", ["activity_time", "id"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite" and sqlite3.sqlite_version_info < (3, 34):
        raise RuntimeError(
            f"the text search index needs SQLite 3.34 or newer (its trigram tokenizer); "
            f"this Python links SQLite {sqlite3.sqlite_version}"
        )
    if dialect == "sqlite":
        op.execute(
            f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(message, subject, "
            "content='activities', content_rowid='id', tokenize='trigram case_sensitive 0')"
        )
        # Index the activities stored before this migration.
        op.execute(
            f"INSERT INTO {FTS_TABLE}(rowid, message, subject) "
            "SELECT id, message, subject FROM activities "
            "WHERE message IS NOT NULL OR subject IS NOT NULL"
        )
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    elif dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for name, column in PG_TRIGRAM_INDEXES.items():
            # Partial: GIN stores NULLs too, and many deliveries have no subject. ILIKE
            # is strict, so the planner knows a match implies IS NOT NULL.
            op.execute(
                f"CREATE INDEX {name} ON activities USING gin ({column} gin_trgm_ops) "
                f"WHERE {column} IS NOT NULL"
            )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
    elif dialect == "postgresql":
        # The pg_trgm extension stays: other objects may use it, and it costs nothing idle.
        for name in PG_TRIGRAM_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
    op.drop_index("ix_activities_activity_time_id", table_name="activities")
    op.create_index("ix_activities_activity_time", "activities", ["activity_time"])
