"""Table definitions. Alembic migrations in app/storage/migrations/versions create exactly these
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
    # (activity_time, id): a time-range page takes its newest ids from the index alone
    # (migration 0005; on SQLite ``id`` is not the rowid).
    sa.Index("ix_activities_activity_time_id", "activity_time", "id"),
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
    # Deleted in NinjaOne (an event or a complete sync said so): kept, never removed.
    sa.Column("deleted_at", sa.Float, nullable=True),
    # When and how (webhook, fetch, event, sync) the row was last refreshed.
    sa.Column("refreshed_at", sa.Float, nullable=True),
    sa.Column("refreshed_by", sa.String(16), nullable=True),
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
    # Deleted in NinjaOne (an event or a complete sync said so): kept, never removed.
    sa.Column("deleted_at", sa.Float, nullable=True),
    # When and how (webhook, fetch, event, sync) the row was last refreshed.
    sa.Column("refreshed_at", sa.Float, nullable=True),
    sa.Column("refreshed_by", sa.String(16), nullable=True),
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
    # Deleted in NinjaOne (an event or a complete sync said so): kept, never removed.
    sa.Column("deleted_at", sa.Float, nullable=True),
    # When and how (webhook, fetch, event, sync) the row was last refreshed.
    sa.Column("refreshed_at", sa.Float, nullable=True),
    sa.Column("refreshed_by", sa.String(16), nullable=True),
)

# Progress markers for NinjaOne API work, e.g. the newest activity id up to which a
# backfill has seen NinjaOne's whole log (the next backfill starts after it).
ninjaone_checkpoints = sa.Table(
    "ninjaone_checkpoints",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# --- alerts (issue: what is wrong right now) --------------------------------------------
# Defined by migration 0003.

# One row per alert. Its columns are a pure function of the linked activities (folded
# in activityTime order, see app.alerts.service), so `alerts rebuild` reproduces them exactly.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
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
    sa.Index("ix_alerts_state_last_activity_time", "state", "last_activity_time"),
    sa.Index("ix_alerts_organization_id", "organization_id"),
    sa.Index("ix_alerts_device_id", "device_id"),
)

# Which activities make up an alert's history. The primary key makes a redelivery or a
# rebuild link an activity once.
#
# Migration 0007 copies what the fold needs of each activity into its link: the fold's
# ordering key (activityTime, or the arrival time without one), the status class
# (``kind``: T triggered, R reset, A acknowledged, NULL anything else) and the values
# that "latest non-null" and "first non-null after" columns come from. With the
# indexes below, an activity that arrives out of order is resolved by a fixed number
# of index seeks whatever the alert's history (app.alerts.service.apply_new_activity).
alert_activities = sa.Table(
    "alert_activities",
    metadata,
    sa.Column("alert_key", sa.String(300), primary_key=True),
    sa.Column("activity_id", sa.BigInteger, primary_key=True),
    sa.Column("order_time", sa.Float, nullable=True),
    sa.Column("kind", sa.String(1), nullable=True),
    sa.Column("severity", sa.Text, nullable=True),
    sa.Column("device_id", sa.Integer, nullable=True),
    sa.Column("organization_id", sa.Integer, nullable=True),
    sa.Column("location_id", sa.Integer, nullable=True),
    sa.Column("source_name", sa.Text, nullable=True),
    # 1 when the activity has a message (the message itself stays in activities), else NULL.
    sa.Column("message_set", sa.SmallInteger, nullable=True),
    sa.Index("ix_alert_activities_activity_id", "activity_id"),
    sa.Index(
        "ix_alert_activities_alert_key_kind_order", "alert_key", "kind", "order_time", "activity_id"
    ),
)
# "The latest (or first after a point) link with a non-null X": one seek each.
ALERT_LINK_VALUE_COLUMNS = (
    "severity",
    "message_set",
    "device_id",
    "organization_id",
    "location_id",
    "source_name",
)
for _name in ALERT_LINK_VALUE_COLUMNS:
    _present = alert_activities.c[_name].is_not(None)
    sa.Index(
        f"ix_alert_activities_{_name}_order",
        alert_activities.c.alert_key,
        alert_activities.c.order_time,
        alert_activities.c.activity_id,
        sqlite_where=_present,
        postgresql_where=_present,
    )

# Counters for /metrics that must add up across gunicorn workers and hosts: every
# process adds its increments to these rows (see app.metrics.service).
metric_counters = sa.Table(
    "metric_counters",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("labels", sa.String(500), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
)

# Search on /activities pages newest first (ORDER BY id DESC) under an equality filter:
# (column, id) lets that be one index range read backwards, however many rows are stored.
sa.Index("ix_activities_organization_id_id", activities.c.organization_id, activities.c.id)
sa.Index("ix_activities_location_id_id", activities.c.location_id, activities.c.id)
sa.Index("ix_activities_source_name_id", activities.c.source_name, activities.c.id)
sa.Index("ix_activities_activity_type_id", activities.c.activity_type, activities.c.id)

# `q` (case-insensitive substring of message or subject), migration 0005. PostgreSQL:
# pg_trgm GIN indexes that ILIKE uses. SQLite: the FTS5 trigram table ``activities_fts``
# and its triggers, which SQLAlchemy cannot describe (so they are not here).
for _column in (activities.c.message, activities.c.subject):
    sa.Index(
        f"ix_activities_{_column.name}_trgm",
        _column,
        postgresql_using="gin",
        postgresql_ops={_column.name: "gin_trgm_ops"},
        postgresql_where=_column.is_not(None),
    ).ddl_if(dialect="postgresql")

# --- outbound notifications --------------------------------------------------------------
# Defined by migration 0004, whose SQL table names are kept. ``deliveries`` is the
# notification outbox: rows are inserted in the ingest transaction and taken by workers
# with row locks. ``route_notices`` (SQL: delivery_alerts) is each route's own view of a
# condition alert it notified, so "once per alert" and the "resolved" follow-up do not
# depend on any other table.

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # Sent with every attempt (webhook-id, Idempotency-Key) so destinations can deduplicate.
    sa.Column("uid", sa.String(40), nullable=False),
    sa.Column("activity_id", sa.BigInteger, nullable=False),
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("destination", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    # "notify", or "resolved" for the follow-up to an alert's RESET.
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("alert_key", sa.Text, nullable=True),
    # The uid of the original notification a "resolved" follow-up refers to.
    sa.Column("refers_to", sa.String(40), nullable=True),
    # pending → delivering → delivered | dead (a dead letter).
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
    # Why a ``suppressed`` delivery was never sent (a silence, the device's maintenance),
    # and the silence that matched (migration 0009).
    sa.Column("suppressed_reason", sa.Text, nullable=True),
    sa.Column("silence_id", sa.Integer, nullable=True),
    # A route's group_by values of the alert (NULL: the route does not group); pending
    # notifications of one route, destination and group go out as one (migration 0010).
    sa.Column("group_key", sa.String(300), nullable=True),
    sa.Index("ix_deliveries_group_key", "group_key", "status"),
    # One delivery per activity, route, destination and event: enqueueing is idempotent.
    sa.UniqueConstraint("activity_id", "route", "destination", "event"),
    sa.UniqueConstraint("uid"),
    sa.Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_created_at", "created_at"),
)

route_notices = sa.Table(
    "delivery_alerts",
    metadata,
    sa.Column("route", sa.String(200), primary_key=True),
    sa.Column("alert_key", sa.String(300), primary_key=True),
    # "open" while the route has notified and no RESET came; "resolved" afterwards.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("opened_activity_id", sa.BigInteger, nullable=False),
    sa.Column("resolved_activity_id", sa.BigInteger, nullable=True),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("resolved_at", sa.Float, nullable=True),
    sa.Column("repeats", sa.Integer, nullable=False, server_default="0"),
    # activityTime of the activity that set ``state``: a late delivery of an older
    # TRIGGERED does not reopen an alert that a newer RESET closed.
    sa.Column("state_activity_time", sa.Float, nullable=True),
    # When the open alert's next reminder is due (a route's ``repeat``), and how many
    # went out (migration 0010).
    sa.Column("remind_at", sa.Float, nullable=True),
    sa.Column("reminders", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_delivery_alerts_remind_at", "remind_at"),
)

# Conditions (a device and a condition's sourceConfigUid) the delivery worker found
# flapping: they notify once and stay quiet until calm (migration 0010).
flapping_conditions = sa.Table(
    "flapping_conditions",
    metadata,
    sa.Column("route", sa.String(200), primary_key=True),
    sa.Column("device_id", sa.BigInteger, primary_key=True),
    sa.Column("source_config_uid", sa.String(200), primary_key=True),
    sa.Column("flapping_since", sa.Float, nullable=False),
    # The firing whose notification said the condition flaps (one per destination).
    sa.Column("marked_activity_id", sa.BigInteger, nullable=False),
    # The last firing plus the route's calm: a firing after it notifies again.
    sa.Column("quiet_until", sa.Float, nullable=False),
    sa.Column("firings", sa.Integer, nullable=False, server_default="0"),
)

dashboard_sessions = sa.Table(
    "dashboard_sessions",
    metadata,
    # SHA-256 (hex) of the random session id in the cookie; the id itself is not stored.
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    # created_at + NINJAHOOK_SESSION_MAX: the absolute limit.
    sa.Column("expires_at", sa.Float, nullable=False),
    # "read" or "operator": the kind of token the session logged in with, and that
    # token's label (who operator actions are recorded under). Migration 0009.
    sa.Column("role", sa.String(16), nullable=True),
    sa.Column("actor", sa.String(200), nullable=True),
    sa.Index("ix_dashboard_sessions_expires_at", "expires_at"),
)

# --- silences and operator actions (issue 14, migration 0009) ---------------------------

# An operator's silence: activities its matchers match between starts_at and ends_at
# are stored and shown, and their notifications recorded as suppressed. Expiring a
# silence sets ends_at to the time of expiry (as Alertmanager does).
silences = sa.Table(
    "silences",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # JSON: route-match keys (app.notifications.routes) plus sourceConfigUid and alertKey.
    sa.Column("matchers", sa.Text, nullable=False),
    sa.Column("starts_at", sa.Float, nullable=False),
    sa.Column("ends_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("expired_at", sa.Float, nullable=True),
    sa.Column("expired_by", sa.String(200), nullable=True),
    # The active silences are those with ends_at in the future: one range read.
    sa.Index("ix_silences_ends_at", "ends_at"),
)

# Who did what and when: every operator action (silence, expire, acknowledge, reset,
# retry), with the label of the token it was done with.
operator_actions = sa.Table(
    "operator_actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("alert_key", sa.String(300), nullable=True),
    # What the action was about besides an alert: a silence id, a delivery id.
    sa.Column("target", sa.String(300), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Index("ix_operator_actions_alert_key_id", "alert_key", "id"),
)
