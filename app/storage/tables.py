"""Table definitions. Alembic migrations in app/migrations/versions create exactly these
(a test compares the two)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# --- ingest (issue: spec-first receiver) -------------------------------------------------

activities = sa.Table(
    "activities",
    metadata,
    # NinjaOne's activity id. The primary key is the idempotency guarantee: a second
    # insert of the same id does nothing, across processes and hosts.
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
    sa.Index("ix_activities_device_id_id", "device_id", "id"),
    sa.Index("ix_activities_series_uid", "series_uid"),
    sa.Index("ix_activities_activity_time", "activity_time"),
)

rejected_deliveries = sa.Table(
    "rejected_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.Float, nullable=False, index=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("field", sa.Text, nullable=True),
    sa.Column("content_type", sa.Text, nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("body_bytes", sa.BigInteger, nullable=False),
    sa.Column("truncated", sa.Boolean, nullable=False, server_default=sa.false()),
)

spec_drift = sa.Table(
    "spec_drift",
    metadata,
    sa.Column("field", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(200), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
)

# Cross-process leases for periodic tasks that must run in one process only.
task_leases = sa.Table(
    "task_leases",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("last_run_at", sa.Float, nullable=True),
)

# --- entity cache (issue: NinjaOne API v2) ----------------------------------------------
# ``observed_at`` is when NinjaOne's data was true (activityTime for a delivery, the
# fetch time for `sync`): an update applies only when it is newer, so a late or
# replayed delivery never overwrites fresher data.

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("raw", sa.JSON, nullable=True),
    sa.Column("observed_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

locations = sa.Table(
    "locations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("organization_id", sa.Integer, nullable=True, index=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("raw", sa.JSON, nullable=True),
    sa.Column("observed_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("organization_id", sa.Integer, nullable=True, index=True),
    sa.Column("location_id", sa.Integer, nullable=True, index=True),
    sa.Column("display_name", sa.Text, nullable=True),
    sa.Column("system_name", sa.Text, nullable=True),
    sa.Column("node_class", sa.Text, nullable=True),
    sa.Column("offline", sa.Boolean, nullable=True),
    sa.Column("last_contact", sa.Float, nullable=True),
    sa.Column("raw", sa.JSON, nullable=True),
    sa.Column("observed_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# --- alerts (issue: what is wrong right now) --------------------------------------------
# Defined by migration 0003.

# --- delivery routing (issue: route activities) -----------------------------------------
# Defined by migration 0004.
