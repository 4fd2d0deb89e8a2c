"""Queries on alerts and their activity history."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Row

from app.storage.activities import Preview, insert_for, preview_of, record_select
from app.storage.prepared import Pending, Prepared
from app.storage.tables import (
    activities,
    alert_activities,
    alerts,
    devices,
    locations,
    organizations,
)

# The activity columns the alert fold reads, under the names app.alerts.service uses.
EVENT_COLUMNS: tuple[sa.ColumnElement[Any], ...] = (
    activities.c.id,
    activities.c.activity_time,
    activities.c.received_at,
    activities.c.activity_type,
    activities.c.status_code,
    activities.c.severity,
    activities.c.priority,
    activities.c.device_id,
    activities.c.organization_id,
    activities.c.location_id,
    activities.c.series_uid,
    activities.c.source_config_uid,
    activities.c.source_name,
    activities.c.message,
)

# What the read API shows for an alert, with names from the entity cache. An alert
# opened by deliveries without expansion (NinjaOne's notification channels, backfilled
# activities) has only a deviceId: its organization and location are then its cached
# device's, as for activities (app.storage.activities.record_select).
_DEVICE_NAME = sa.func.coalesce(devices.c.display_name, devices.c.system_name)
_ORGANIZATION_ID = sa.func.coalesce(alerts.c.organization_id, devices.c.organization_id)
_LOCATION_ID = sa.func.coalesce(alerts.c.location_id, devices.c.location_id)


@dataclass(frozen=True)
class AlertFilter:
    """Filters for :func:`list_alerts`; None means no filter on that column."""

    state: str = "open"
    organization_id: int | None = None
    device_id: int | None = None
    severity: str | None = None


# Every column of an alert row but its key, as the fold produces them.
_ALERT_COLUMNS = tuple(column for column in alerts.c if column.name != "key")


def _lock_statement(dialect: str) -> Any:
    new_row = insert_for(dialect, alerts).values(
        key=sa.bindparam("key"), state="closed", acknowledged=False
    )
    # DO UPDATE (of nothing that changes) rather than DO NOTHING: it returns the row
    # whether or not it was just inserted, and on PostgreSQL it takes the row lock,
    # waiting for a concurrent transaction on the same alert and then returning that
    # transaction's committed row.
    return new_row.on_conflict_do_update(
        index_elements=[alerts.c.key], set_={"key": new_row.excluded.key}
    ).returning(*_ALERT_COLUMNS)


# What a link row holds besides its key (app.alerts.service.link_columns computes them).
LINK_COLUMNS = tuple(
    column.name for column in alert_activities.c if column.name not in ("alert_key", "activity_id")
)


def _link_statement(dialect: str) -> Any:
    return (
        insert_for(dialect, alert_activities)
        .values(
            alert_key=sa.bindparam("alert_key"),
            activity_id=sa.bindparam("activity_id"),
            **{name: sa.bindparam(name) for name in LINK_COLUMNS},
        )
        .on_conflict_do_nothing(
            index_elements=[alert_activities.c.alert_key, alert_activities.c.activity_id]
        )
    )


def _write_statement(_dialect: str) -> Any:
    # SET takes the columns from the parameters' names (every column but the key).
    return sa.update(alerts).where(alerts.c.key == sa.bindparam("alert_key"))


# Ingest runs these three for every CONDITION activity, inside the write transaction:
# see app.storage.prepared.
_LOCK = Prepared(_lock_statement)
_LINK = Prepared(_link_statement)
_WRITE = Prepared(_write_statement)


def lock_alert(conn: Connection, key: str) -> Mapping[str, Any]:
    """Make sure the alert row exists, hold it until the transaction ends, and return it.

    A new row holds the columns of an alert with no activities (closed, nothing
    applied). Concurrent deliveries for one alert then update it one after the
    other, each seeing the row and links the previous one committed (PostgreSQL's
    READ COMMITTED takes a fresh snapshot per statement; SQLite has a single writer
    anyway). Inside :func:`locked_alerts` for ``key``, the row it locked is returned
    (as this transaction last wrote it), without a statement.
    """
    locked: _Locked | None = conn.info.get(_LOCKED)
    if locked is not None:
        row = locked.row(key)
        if row is not None:
            return row
    (row,) = _LOCK.execute(conn, {"key": key})
    return row


def _lock_many_statement(dialect: str) -> Any:
    if dialect != "postgresql":
        raise NotImplementedError("locked_alerts sends one statement on PostgreSQL only")
    keys = sa.func.unnest(sa.bindparam("keys", type_=postgresql.ARRAY(alerts.c.key.type)))
    wanted = sa.select(keys.column_valued("wanted")).subquery()
    new_rows = (
        sa.select(wanted.c.wanted, sa.literal("closed"), sa.false())
        # One order for every writer: two batches that share alerts never wait on
        # each other in a cycle.
        .order_by(wanted.c.wanted)
    )
    insert = postgresql.insert(alerts).from_select(["key", "state", "acknowledged"], new_rows)
    return insert.on_conflict_do_update(
        index_elements=[alerts.c.key], set_={"key": insert.excluded.key}
    ).returning(alerts.c.key, *_ALERT_COLUMNS)


_LOCK_MANY = Prepared(_lock_many_statement)
_LOCKED = "ninjahook.alerts.locked"


class _Locked:
    """Alert rows a batch locked with one statement, kept as the batch writes them."""

    def __init__(self, pending: Pending) -> None:
        self._pending: Pending | None = pending
        self._rows: dict[str, dict[str, Any]] = {}

    def row(self, key: str) -> dict[str, Any] | None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._rows = {row["key"]: row for row in pending.rows()}
        return self._rows.get(key)

    def wrote(self, key: str, values: Mapping[str, Any]) -> None:
        row = self._rows.get(key)
        if row is not None:
            row.update((name, values[name]) for name in row if name in values)


@contextmanager
def locked_alerts(conn: Connection, keys: Iterable[str]) -> Iterator[None]:
    """Lock (creating them as :func:`lock_alert` does) the alerts ``keys`` with one
    statement; inside the block :func:`lock_alert` answers for them without a statement.

    For a batch of deliveries on PostgreSQL: one round trip (sent with what follows it
    in a pipeline, :func:`app.storage.prepared.pipelined`) instead of one per delivery.
    Lock only alerts that the block's deliveries will write: a row created here and
    never written is an alert with no activities. Elsewhere (SQLite, where a statement
    costs no round trip) the block runs as usual.
    """
    wanted = sorted(set(keys))
    if not wanted or conn.dialect.name != "postgresql" or _LOCKED in conn.info:
        yield
        return
    conn.info[_LOCKED] = _Locked(_LOCK_MANY.send(conn, {"keys": wanted}))
    try:
        yield
    finally:
        conn.info.pop(_LOCKED, None)


def link_activity(
    conn: Connection, key: str, activity_id: int, values: Mapping[str, Any] | None = None
) -> None:
    """Add an activity to an alert's history (once, whatever happens); ``values`` holds
    :data:`LINK_COLUMNS` (missing ones are stored as NULL)."""
    columns = dict.fromkeys(LINK_COLUMNS)
    columns.update(values or {})
    _LINK.execute(conn, {**columns, "alert_key": key, "activity_id": activity_id})


# Below every real ordering key: "after nothing" means "from the start".
_NO_TIME = -1e300
_NO_ID = -(2**63)


def _fold_inputs_statement() -> sa.Select[Any]:
    link = alert_activities.c
    key = link.alert_key == sa.bindparam("key", type_=alerts.c.key.type)
    position = sa.tuple_(link.order_time, link.activity_id)
    newest_first = (link.order_time.desc(), link.activity_id.desc())
    oldest_first = (link.order_time, link.activity_id)

    def point(*where: Any, order: Any) -> Any:
        return (
            sa.select(link.order_time.label("t"), link.activity_id.label("id"))
            .where(key, *where)
            .order_by(*order)
            .limit(1)
        )

    def at(cte: Any) -> Any:
        """(t, id) of a one-row CTE, or the position before everything when it is empty."""
        return sa.tuple_(
            sa.func.coalesce(sa.select(cte.c.t).scalar_subquery(), sa.literal(_NO_TIME, sa.Float)),
            sa.func.coalesce(
                sa.select(cte.c.id).scalar_subquery(), sa.literal(_NO_ID, sa.BigInteger)
            ),
        )

    triggered = point(link.kind == "T", order=newest_first).cte("last_triggered")
    reset = point(link.kind == "R", order=newest_first).cte("last_reset")
    # The last RESET before the last TRIGGERED, then the first TRIGGERED after it: the
    # TRIGGERED that opened the alert's current (or last) episode.
    reset_before = point(
        link.kind == "R",
        position
        < sa.tuple_(
            sa.select(triggered.c.t).scalar_subquery(), sa.select(triggered.c.id).scalar_subquery()
        ),
        order=newest_first,
    ).cte("reset_before")
    opening = point(link.kind == "T", position > at(reset_before), order=oldest_first).cte(
        "opening"
    )
    acknowledged = (
        sa.select(link.activity_id).where(key, link.kind == "A", position > at(opening)).exists()
    )

    def first_from_last_triggered(column: Any, value: Any) -> Any:
        return (
            sa.select(value)
            .where(key, column.is_not(None), position >= at(triggered))
            .order_by(*oldest_first)
            .limit(1)
            .scalar_subquery()
        )

    def latest(column: Any) -> Any:
        return (
            sa.select(column)
            .where(key, column.is_not(None))
            .order_by(*newest_first)
            .limit(1)
            .scalar_subquery()
        )

    points = sa.select(
        sa.select(triggered.c.t).scalar_subquery().label("triggered_time"),
        sa.select(triggered.c.id).scalar_subquery().label("triggered_id"),
        sa.select(reset.c.t).scalar_subquery().label("reset_time"),
        sa.select(reset.c.id).scalar_subquery().label("reset_id"),
        sa.select(opening.c.t).scalar_subquery().label("opened_at"),
        acknowledged.label("acknowledged"),
        first_from_last_triggered(link.severity, link.severity).label("severity"),
        first_from_last_triggered(link.message_set, link.activity_id).label("message_id"),
        *(latest(link[name]).label(name) for name in _LATEST_COLUMNS),
    ).cte("points")
    described = activities.alias("described")
    worded = activities.alias("worded")
    return (
        sa.select(
            points,
            described.c.priority.label("priority"),
            worded.c.message.label("message"),
        )
        .select_from(points)
        .outerjoin(described, described.c.id == points.c.triggered_id)
        .outerjoin(worded, worded.c.id == points.c.message_id)
    )


_LATEST_COLUMNS = ("device_id", "organization_id", "location_id", "source_name")


def fold_inputs(conn: Connection, key: str) -> Mapping[str, Any]:
    """The few linked events that decide an alert's columns, found by index seeks.

    ``triggered_*`` / ``reset_*``: the last TRIGGERED / RESET (None without one);
    ``opened_at``: the time of the first TRIGGERED after the last RESET that precedes the
    last TRIGGERED; ``acknowledged``: an ACKNOWLEDGED after that one (after nothing, without
    a TRIGGERED); ``severity``, ``message``: the first non-null one from the last
    TRIGGERED on (from the start, without one); ``priority``: the last TRIGGERED's;
    device, organization, location and source name: the latest non-null ones. Each is
    one seek on an alert_activities index, so the cost does not grow with the history.
    """
    (row,) = _FOLD_INPUTS.execute(conn, {"key": key})
    return row


# Prepared: through Core, building this statement's cache key and parameters cost
# three times what SQLite spends running it, on every out-of-order activity.
_FOLD_INPUTS = Prepared(lambda _dialect: _fold_inputs_statement())


def alert_events(conn: Connection, key: str) -> list[Row[Any]]:
    """The stored activities of one alert (the fold's input columns), in any order."""
    stmt = (
        sa.select(*EVENT_COLUMNS)
        .join(alert_activities, alert_activities.c.activity_id == activities.c.id)
        .where(alert_activities.c.alert_key == key)
    )
    return list(conn.execute(stmt))


def write_alert(conn: Connection, key: str, values: Mapping[str, Any]) -> None:
    """Replace every column of an existing alert row (``values`` has them all)."""
    _WRITE.execute(conn, {**values, "alert_key": key})
    locked: _Locked | None = conn.info.get(_LOCKED)
    if locked is not None:
        locked.wrote(key, values)


def condition_events(conn: Connection, *, batch: int = 5000) -> Iterator[list[Row[Any]]]:
    """Every stored CONDITION* activity (the fold's columns), in id order, ``batch`` at a time."""
    after = -1
    while True:
        rows = list(
            conn.execute(
                sa.select(*EVENT_COLUMNS)
                .where(activities.c.activity_type.like("CONDITION%"), activities.c.id > after)
                .order_by(activities.c.id)
                .limit(batch)
            )
        )
        if not rows:
            return
        yield rows
        after = rows[-1].id


def count_condition_activities(conn: Connection) -> int:
    """How many CONDITION* activities are stored (for progress output)."""
    stmt = sa.select(sa.func.count()).where(activities.c.activity_type.like("CONDITION%"))
    return int(conn.execute(stmt).scalar() or 0)


def replace_all(
    conn: Connection, rows: Sequence[Mapping[str, Any]], links: Sequence[Mapping[str, Any]]
) -> None:
    """Drop every alert and link, then store ``rows`` and ``links`` (``alerts rebuild``;
    a link has ``alert_key``, ``activity_id`` and :data:`LINK_COLUMNS`)."""
    conn.execute(sa.delete(alert_activities))
    conn.execute(sa.delete(alerts))
    for start in range(0, len(rows), 1000):
        conn.execute(sa.insert(alerts), [dict(r) for r in rows[start : start + 1000]])
    for start in range(0, len(links), 5000):
        conn.execute(sa.insert(alert_activities), [dict(x) for x in links[start : start + 5000]])


def _alert_select(preview: int | None = None, rows: sa.FromClause = alerts) -> sa.Select[Any]:
    """Alert rows with entity names; with ``preview``, the message cut in SQL to
    ``preview + 1`` characters (one more than shown, to tell a cut one).

    ``organization_id`` and ``location_id`` are the alert's own, or else its cached
    device's. ``rows``, when given, is a subquery of the ``key``s to return: the names are
    then joined for those rows only.
    """
    shown: dict[str, sa.ColumnElement[Any]] = {
        "organization_id": _ORGANIZATION_ID.label("organization_id"),
        "location_id": _LOCATION_ID.label("location_id"),
    }
    if preview is not None:
        shown["message"] = preview_of(alerts.c.message, preview).label("message")
    source: sa.FromClause = alerts
    if rows is not alerts:
        source = rows.join(alerts, alerts.c.key == rows.c.key)
    return (
        sa.select(
            *(shown.get(c.name, c) for c in alerts.c),
            _DEVICE_NAME.label("device_name"),
            organizations.c.name.label("organization_name"),
            locations.c.name.label("location_name"),
        )
        .select_from(source)
        .outerjoin(devices, devices.c.id == alerts.c.device_id)
        .outerjoin(organizations, organizations.c.id == _ORGANIZATION_ID)
        .outerjoin(locations, locations.c.id == _LOCATION_ID)
    )


def _in_organization(organization_id: int) -> sa.ColumnElement[bool]:
    """The alert's organization (its own, or else its cached device's) is ``organization_id``.

    Written as the union of two index seeks, the alerts of the organization
    (ix_alerts_organization_id) and the alerts without one on its cached devices
    (ix_devices_organization_id, then ix_alerts_device_id), rather than as the COALESCE
    over a join, which no index serves: its cost follows the organization's alerts and
    devices, not the table (measured with EXPLAIN on 5,000 alerts, both backends).
    """
    own = sa.select(alerts.c.key).where(alerts.c.organization_id == organization_id)
    through_device = (
        sa.select(alerts.c.key)
        .join(devices, devices.c.id == alerts.c.device_id)
        .where(devices.c.organization_id == organization_id, alerts.c.organization_id.is_(None))
    )
    return alerts.c.key.in_(sa.union_all(own, through_device))


def _conditions(flt: AlertFilter) -> list[sa.ColumnElement[bool]]:
    """``flt`` as WHERE conditions on ``alerts`` (no join needed)."""
    conditions: list[sa.ColumnElement[bool]] = [alerts.c.last_activity_id.is_not(None)]
    if flt.state != "all":
        conditions.append(alerts.c.state == flt.state)
    if flt.organization_id is not None:
        conditions.append(_in_organization(flt.organization_id))
    if flt.device_id is not None:
        conditions.append(alerts.c.device_id == flt.device_id)
    if flt.severity is not None:
        conditions.append(alerts.c.severity == flt.severity)
    return conditions


def list_alerts(
    conn: Connection,
    flt: AlertFilter,
    *,
    limit: int,
    before_id: int | None = None,
    preview: int | None = None,
) -> list[Row[Any]]:
    """Up to ``limit`` alerts matching ``flt``, most recently active (by last activity id)
    first, below ``before_id``; rows carry the entity names. With ``preview``, messages
    are cut in SQL (see :func:`_alert_select`)."""
    stmt = _alert_select(preview).where(*_conditions(flt))
    if before_id is not None:
        stmt = stmt.where(alerts.c.last_activity_id < before_id)
    return list(conn.execute(stmt.order_by(alerts.c.last_activity_id.desc()).limit(limit)))


def get_alert(conn: Connection, key: str) -> Row[Any] | None:
    """One alert with entity names, or None."""
    return conn.execute(_alert_select().where(alerts.c.key == key)).first()


def alert_history(conn: Connection, key: str, *, preview: Preview | None = None) -> list[Row[Any]]:
    """An alert's activities under API column names with ``raw`` and entity names, oldest
    first (by activityTime, as the alert was folded); long values cut as ``preview`` says."""
    order_time = sa.func.coalesce(activities.c.activity_time, activities.c.received_at)
    ids = sa.select(alert_activities.c.activity_id.label("id")).where(
        alert_activities.c.alert_key == key
    )
    stmt = record_select(ids.subquery(), preview=preview).order_by(order_time, activities.c.id)
    return list(conn.execute(stmt))


def all_alerts(conn: Connection) -> list[Row[Any]]:
    """Every alert row (no names), by key; for comparisons and exports."""
    return list(conn.execute(sa.select(alerts).order_by(alerts.c.key)))


def open_alerts_by_severity(conn: Connection) -> dict[str | None, int]:
    """How many alerts are open, per severity (None: no severity given)."""
    stmt = (
        sa.select(alerts.c.severity, sa.func.count())
        .where(alerts.c.state == "open")
        .group_by(alerts.c.severity)
    )
    return {row[0]: int(row[1]) for row in conn.execute(stmt)}


# The order a technician reads open alerts in: the worst first, whatever the
# organization; a severity NinjaOne may add later ranks with NONE.
SEVERITY_RANK = {"CRITICAL": 0, "MAJOR": 1, "MODERATE": 2, "MINOR": 3, "NONE": 4}
_RANK = sa.case(
    *((alerts.c.severity == name, rank) for name, rank in SEVERITY_RANK.items()),
    else_=len(SEVERITY_RANK) - 1,
)


def alerts_by_rank(
    conn: Connection,
    flt: AlertFilter,
    *,
    limit: int,
    offset: int = 0,
    preview: int | None = None,
) -> list[Row[Any]]:
    """Up to ``limit`` alerts matching ``flt`` from ``offset``, worst severity first
    (:data:`SEVERITY_RANK`), then the most recently opened, then by key; rows as
    :func:`list_alerts`'s. The page's keys are chosen on ``alerts`` alone and the names
    joined for those rows only."""
    order = (_RANK, alerts.c.opened_at.desc(), alerts.c.key)
    page = (
        sa.select(alerts.c.key, _RANK.label("rank"))
        .where(*_conditions(flt))
        .order_by(*order)
        .limit(limit)
        .offset(offset)
        .subquery("page")
    )
    stmt = _alert_select(preview, page).order_by(
        page.c.rank, alerts.c.opened_at.desc(), alerts.c.key
    )
    return list(conn.execute(stmt))


def alerts_by_severity(conn: Connection, flt: AlertFilter) -> dict[str | None, int]:
    """How many alerts match ``flt``, per severity (None: no severity given); with
    ``AlertFilter()`` the same numbers as :func:`open_alerts_by_severity`."""
    stmt = (
        sa.select(alerts.c.severity, sa.func.count())
        .where(*_conditions(flt))
        .group_by(alerts.c.severity)
    )
    return {row[0]: int(row[1]) for row in conn.execute(stmt)}
