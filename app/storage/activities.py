"""Queries on stored activities, rejected deliveries and spec drift."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from app.storage.prepared import Pending, Prepared
from app.storage.tables import (
    activities,
    devices,
    locations,
    organizations,
    rejected_deliveries,
    spec_drift,
)

# Columns the read API exposes, in API naming.
ACTIVITY_COLUMNS: Mapping[str, sa.Column[Any]] = {
    "id": activities.c.id,
    "activityTime": activities.c.activity_time,
    "deviceId": activities.c.device_id,
    "organizationId": activities.c.organization_id,
    "locationId": activities.c.location_id,
    "activityType": activities.c.activity_type,
    "statusCode": activities.c.status_code,
    "severity": activities.c.severity,
    "priority": activities.c.priority,
    "activityResult": activities.c.activity_result,
    "seriesUid": activities.c.series_uid,
    "sourceConfigUid": activities.c.source_config_uid,
    "sourceName": activities.c.source_name,
    "userId": activities.c.user_id,
    "message": activities.c.message,
    "subject": activities.c.subject,
    "source": activities.c.source,
    "receivedAt": activities.c.received_at,
}


def dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """A dialect-specific INSERT that supports ON CONFLICT (every storage module's)."""
    return insert_for(conn.dialect.name, table)


def insert_for(dialect: str, table: sa.Table) -> Any:
    """:func:`dialect_insert` by dialect name, for statements built once per dialect."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def insert_activity(conn: Connection, row: Mapping[str, Any]) -> bool:
    """Insert one activity unless its id is stored already; True when it was new.

    The primary key decides, so concurrent deliveries of one id on any number
    of processes or hosts store exactly one row.

    Inside :func:`speculative_inserts` (and :func:`app.storage.prepared.pipelined`),
    the INSERT is sent ahead and True is answered before the server has; the block's
    end checks every such answer.
    """
    speculation: _Speculation | None = conn.info.get(_SPECULATION)
    if speculation is None or row["id"] in speculation.check:
        return bool(_INSERT_ACTIVITY.execute(conn, row))
    pending = _INSERT_ACTIVITY.send(conn, row)
    if not pending.in_pipeline:
        return bool(pending.rows())  # it has run already: no need to guess
    speculation.sent.append((row["id"], pending))
    return True


class Misspeculated(Exception):
    """Activities that :func:`speculative_inserts` took for new were stored already.

    The transaction must be rolled back (the ingest stages ran for them) and run again
    with ``ids`` in ``check``.
    """

    def __init__(self, ids: set[int]) -> None:
        super().__init__(f"{len(ids)} activities were stored already")
        self.ids = ids


@dataclass
class _Speculation:
    check: frozenset[int]
    sent: list[tuple[int, Pending]] = field(default_factory=list)


_SPECULATION = "ninjahook.activities.speculation"


@contextmanager
def speculative_inserts(conn: Connection, check: frozenset[int] = frozenset()) -> Iterator[None]:
    """Inside the block, :func:`insert_activity` does not wait for the server's answer
    when a pipeline is open on ``conn``: it answers True (new) at once.

    Deliveries are new but for the rare redelivery, so a batch of them can go to
    PostgreSQL without one round trip per activity. Open the pipeline inside this
    block: when the block ends, every answer has arrived and is checked.

    :param check: ids to insert the usual way, answer awaited (an id that occurs
        twice in the batch, or that was taken for new before).
    :raises Misspeculated: an id taken for new was stored already (by an earlier
        transaction, or earlier in this one); roll back and run the batch again with
        those ids in ``check``. Nothing else that the block raises is changed.
    """
    speculation = _Speculation(check)
    conn.info[_SPECULATION] = speculation
    try:
        yield
    finally:
        conn.info.pop(_SPECULATION, None)
    stored = {activity_id for activity_id, pending in speculation.sent if not pending.rows()}
    if stored:
        raise Misspeculated(stored)


def _insert_activity_statement(dialect: str) -> Any:
    return (
        insert_for(dialect, activities)
        .on_conflict_do_nothing(index_elements=[activities.c.id])
        .returning(activities.c.id)
    )


# Run for every delivery, inside the write transaction: see app.storage.prepared.
_INSERT_ACTIVITY = Prepared(_insert_activity_statement)


def existing_activity_ids(conn: Connection, ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` are stored."""
    if not ids:
        return set()
    rows = conn.execute(sa.select(activities.c.id).where(activities.c.id.in_(list(ids))))
    return {r[0] for r in rows}


def newest_activity_id(conn: Connection) -> int | None:
    """The largest stored activity id, or None when nothing is stored."""
    return conn.execute(sa.select(sa.func.max(activities.c.id))).scalar()


def count_activities(conn: Connection) -> int:
    """How many activities are stored."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(activities)).scalar() or 0)


def get_activity(conn: Connection, activity_id: int) -> Row[Any] | None:
    """One stored activity with its raw bytes, or None."""
    return conn.execute(sa.select(activities).where(activities.c.id == activity_id)).first()


def get_activity_raw(conn: Connection, activity_id: int) -> bytes | None:
    """The exact bytes received for an activity, or None."""
    raw = conn.execute(sa.select(activities.c.raw).where(activities.c.id == activity_id)).scalar()
    return None if raw is None else bytes(raw)


@dataclass(frozen=True)
class ActivityFilter:
    """Filters for :func:`list_activities`; None means no filter on that column."""

    device_id: int | None = None
    organization_id: int | None = None
    location_id: int | None = None
    activity_type: str | None = None
    status_code: str | None = None
    severity: str | None = None
    series_uid: str | None = None
    source_name: str | None = None
    text: str | None = None
    since: float | None = None
    until: float | None = None


# The trigram indexes (migration 0005) hold three-character windows: a shorter ``q``
# cannot use them and is matched by scanning the rows the other filters select.
TRIGRAM = 3
# SQLite: how many of the newest text matches a page examines through the FTS index, in
# rounds, before it hands the rest of the page to the other filters' indexes (see
# _text_page_ids). Each candidate costs a row read for the exact check.
FTS_ROUNDS = (256, 2048)
FTS_TABLE = sa.table("activities_fts", sa.column("rowid", sa.BigInteger))


# An activity delivered without expansion (a notification channel, a backfill) has only
# a deviceId: its organization and location are then its cached device's, for the
# filters as for what a read shows (record_select). Its own, when it has them, win.
_ORGANIZATION_ID = sa.func.coalesce(activities.c.organization_id, devices.c.organization_id)
_LOCATION_ID = sa.func.coalesce(activities.c.location_id, devices.c.location_id)


def _entity_alternatives(flt: ActivityFilter) -> list[list[list[sa.ColumnElement[bool]]]]:
    """For the organization and location filters given, the two ways an activity meets
    each: its own value is the one asked for, or it has none and its cached device has.

    Each way is served by an index: (organization_id, id) / (location_id, id) for the
    first; for the second the devices' organization or location index, then
    (device_id, id) for those devices' activities, their own value checked NULL.
    """
    c = activities.c
    # Its own name: a query that joins ``devices`` for the names must not correlate.
    cached_devices = devices.alias("cached_devices")
    wanted = (
        (c.organization_id, cached_devices.c.organization_id, flt.organization_id),
        (c.location_id, cached_devices.c.location_id, flt.location_id),
    )
    return [
        [
            [own == value],
            [
                # ``+ 0``: checked on the device's rows, never read through own's index
                # (SQLite would otherwise scan every unexpanded activity by id with a
                # time range; measured 270 ms against 20 ms on bench.query's table).
                (own + 0).is_(None),
                c.device_id.in_(sa.select(cached_devices.c.id).where(cached == value)),
            ],
        ]
        for own, cached, value in wanted
        if value is not None
    ]


def _branches(flt: ActivityFilter) -> list[list[sa.ColumnElement[bool]]]:
    """The filter as disjoint conjunctions (one without organization and location
    filters; up to four with both), each of which one index read serves: a page of
    the newest rows is the newest of each branch's newest, rather than one OR that no
    index orders by id."""
    common = _where(replace(flt, organization_id=None, location_id=None))
    return [
        common + [condition for way in ways for condition in way]
        for ways in itertools.product(*_entity_alternatives(flt))
    ]


def _where(flt: ActivityFilter) -> list[sa.ColumnElement[bool]]:
    """The filter's conditions, ``q`` included (as the exact ILIKE condition); an
    organization or location filter as the OR of :func:`_entity_alternatives`, for
    reading rows whose ids are known to lie in a small range."""
    c = activities.c
    clauses: list[sa.ColumnElement[bool]] = [
        sa.or_(*(sa.and_(*way) for way in ways)) for ways in _entity_alternatives(flt)
    ]
    equal = {
        c.device_id: flt.device_id,
        c.activity_type: flt.activity_type,
        c.status_code: flt.status_code,
        c.severity: flt.severity,
        c.series_uid: flt.series_uid,
        c.source_name: flt.source_name,
    }
    clauses.extend(col == value for col, value in equal.items() if value is not None)
    if flt.since is not None:
        clauses.append(c.activity_time >= flt.since)
    if flt.until is not None:
        clauses.append(c.activity_time < flt.until)
    if flt.text:
        clauses.append(_text_condition(flt.text))
    return clauses


def _text_condition(text: str) -> sa.ColumnElement[bool]:
    """``text`` as a case-insensitive substring of message or subject, ``%`` and ``_`` literal.

    This is the definition of ``q`` on both backends. PostgreSQL serves it from the pg_trgm
    indexes directly; on SQLite the FTS index only narrows the candidates and this decides.
    """
    c = activities.c
    text = searchable(text)
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return sa.or_(c.message.ilike(pattern, escape="\\"), c.subject.ilike(pattern, escape="\\"))


def _fts_phrase(text: str) -> str:
    """``text`` as one FTS5 phrase: with the trigram tokenizer, a substring match."""
    return '"' + searchable(text).replace('"', '""') + '"'


def searchable(text: str) -> str:
    """Search text as stored text is: a NUL (which neither backend takes in a query
    parameter) becomes U+FFFD, as ingest stores it (app.ingest.text)."""
    return text.replace("\x00", "\ufffd")


@dataclass(frozen=True)
class Preview:
    """How much of an activity's long values a list reads.

    ``chars`` characters of message and subject (one more is read, so that a cut text
    can be told from one of exactly that length), and the raw body only when it is at
    most ``payload_bytes`` long (NULL otherwise). The cutting happens in SQL, so a page
    never brings a whole long value into the worker.
    """

    chars: int
    payload_bytes: int


def preview_of(column: sa.ColumnElement[Any], chars: int) -> sa.ColumnElement[Any]:
    """``column``'s first ``chars + 1`` characters (bytes for a binary column), in SQL."""
    return sa.func.substr(column, 1, chars + 1, type_=column.type)


def record_select(
    rows: sa.FromClause = activities, *, preview: Preview | None = None
) -> sa.Select[Any]:
    """Every API column under its API name, the raw body, and the names from the entity cache.

    An activity delivered without expansion still gets its organization and location
    (ids and names) through its cached device. ``rows``, when given, is a subquery of
    the ``id``s to return: the entity names are then joined for those rows only. With
    ``preview``, message, subject and raw are cut as :class:`Preview` says.
    """
    source: sa.FromClause = activities
    if rows is not activities:
        source = rows.join(activities, activities.c.id == rows.c.id)
    columns: dict[str, sa.ColumnElement[Any]] = {
        **ACTIVITY_COLUMNS,
        "organizationId": _ORGANIZATION_ID,
        "locationId": _LOCATION_ID,
    }
    raw: sa.ColumnElement[Any] = activities.c.raw
    if preview is not None:
        columns["message"] = preview_of(activities.c.message, preview.chars)
        columns["subject"] = preview_of(activities.c.subject, preview.chars)
        raw = sa.case(
            (sa.func.length(activities.c.raw) <= preview.payload_bytes, activities.c.raw),
            else_=sa.null(),
        )
    return (
        sa.select(
            *[col.label(name) for name, col in columns.items()],
            raw.label("raw"),
            sa.func.coalesce(devices.c.display_name, devices.c.system_name).label("deviceName"),
            organizations.c.name.label("organizationName"),
            locations.c.name.label("locationName"),
        )
        .select_from(source)
        .outerjoin(devices, devices.c.id == activities.c.device_id)
        .outerjoin(organizations, organizations.c.id == _ORGANIZATION_ID)
        .outerjoin(locations, locations.c.id == _LOCATION_ID)
    )


def get_activity_record(conn: Connection, activity_id: int) -> Row[Any] | None:
    """One activity under API column names, with ``raw``; None when not stored."""
    return conn.execute(record_select().where(activities.c.id == activity_id)).first()


def _page_ids(
    branches: Sequence[Sequence[sa.ColumnElement[bool]]], limit: int, before_id: int | None
) -> sa.Select[Any]:
    """The ids of one page: the newest ``limit`` rows meeting any of ``branches``
    (:func:`_branches`) below ``before_id``."""
    pages = []
    for conditions in branches:
        stmt = sa.select(activities.c.id).where(*conditions)
        if before_id is not None:
            stmt = stmt.where(activities.c.id < before_id)
        pages.append(stmt.order_by(activities.c.id.desc()).limit(limit))
    if len(pages) == 1:
        return pages[0]
    merged = _union(pages)
    return sa.select(merged.c.id).order_by(merged.c.id.desc()).limit(limit)


def _union(selects: Sequence[sa.Select[Any]]) -> sa.Subquery:
    """UNION ALL of ``selects``, each with its own ORDER BY ... LIMIT (as a subquery,
    which SQLite requires of a compound SELECT's members)."""
    members = [sa.select(*s.subquery().c) for s in selects]
    return sa.union_all(*members).subquery("branches")


def list_activities(
    conn: Connection,
    flt: ActivityFilter,
    *,
    limit: int,
    before_id: int | None = None,
    preview: Preview | None = None,
) -> list[Row[Any]]:
    """Up to ``limit`` activities matching ``flt``, newest (highest id) first, below ``before_id``.

    Rows carry the API column names and ``raw``. The page's ids are chosen first, from
    the indexes, and the entity names joined for those rows only: joining before the
    ORDER BY ... LIMIT would look up names for every row in a time range. With
    ``preview``, long values are cut in SQL (:class:`Preview`).
    """
    if flt.text and len(flt.text) >= TRIGRAM and conn.dialect.name == "sqlite":
        ids = _text_page_ids(conn, flt, limit, before_id)
        if not ids:
            return []
        stmt = record_select(preview=preview).where(activities.c.id.in_(ids))
    else:
        page = _page_ids(_branches(flt), limit, before_id).subquery("page")
        stmt = record_select(page, preview=preview)
    return list(conn.execute(stmt.order_by(activities.c.id.desc())))


def _text_page_ids(
    conn: Connection, flt: ActivityFilter, limit: int, before_id: int | None
) -> list[int]:
    """SQLite: a page's ids for a ``q`` of three or more characters, newest first.

    The FTS index yields the text matches newest first. They are taken in rounds of
    :data:`FTS_ROUNDS` candidates, each checked against the other filters and the exact
    ILIKE condition: a common word fills the page in the first small round, a rare text
    runs out of matches and is answered completely. When every round is used up, the
    text is common but the other filters keep few of its matches (a device, a time range
    long ago): the rest of the page lies below the oldest candidate, and the ordinary
    query through those filters' indexes, with the ILIKE condition, finishes it there.
    A page thus reads at most ``sum(FTS_ROUNDS)`` FTS rows.
    """
    conditions = _where(flt)
    phrase = _fts_phrase(str(flt.text))
    found: list[int] = []
    below = before_id
    for size in FTS_ROUNDS:
        newest_matches = (
            sa.select(FTS_TABLE.c.rowid.label("id"))
            .where(sa.literal_column(FTS_TABLE.name).op("MATCH")(phrase))
            .order_by(FTS_TABLE.c.rowid.desc())
            .limit(size)
        )
        if below is not None:
            newest_matches = newest_matches.where(FTS_TABLE.c.rowid < below)
        candidates = newest_matches.subquery("candidates")
        found += conn.execute(
            sa.select(activities.c.id)
            .select_from(candidates.join(activities, activities.c.id == candidates.c.id))
            .where(*conditions)
            .order_by(candidates.c.id.desc())
            .limit(limit - len(found))
        ).scalars()
        if len(found) == limit:
            return found
        examined, below = conn.execute(
            sa.select(sa.func.count(), sa.func.min(candidates.c.id))
        ).one()
        if examined < size:
            return found  # every text match below before_id has been examined
    rest = _page_ids(_branches(flt), limit - len(found), below)
    return found + list(conn.execute(rest).scalars())


def insert_rejected(
    conn: Connection,
    *,
    received_at: float,
    reason: str,
    field: str | None,
    content_type: str | None,
    body: bytes,
    body_bytes: int,
    truncated: bool,
) -> int:
    """Keep an authenticated delivery that failed validation; returns its row id."""
    result = conn.execute(
        sa.insert(rejected_deliveries)
        .values(
            received_at=received_at,
            reason=reason,
            field=field,
            content_type=content_type,
            body=body,
            body_bytes=body_bytes,
            truncated=truncated,
        )
        .returning(rejected_deliveries.c.id)
    )
    return int(result.scalar_one())


def list_rejected(conn: Connection, *, limit: int, before_id: int | None = None) -> list[Row[Any]]:
    """Rejected deliveries, newest first."""
    stmt = sa.select(rejected_deliveries)
    if before_id is not None:
        stmt = stmt.where(rejected_deliveries.c.id < before_id)
    return list(conn.execute(stmt.order_by(rejected_deliveries.c.id.desc()).limit(limit)))


def count_rejected(conn: Connection) -> int:
    """How many rejected deliveries are kept."""
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(rejected_deliveries)).scalar() or 0
    )


def record_spec_drift(conn: Connection, field: str, value: str, now: float) -> None:
    """Count one more sighting of an unknown enum value."""
    stmt = dialect_insert(conn, spec_drift).values(
        field=field, value=value[:200], count=1, first_seen=now, last_seen=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[spec_drift.c.field, spec_drift.c.value],
        set_={"count": spec_drift.c.count + 1, "last_seen": now},
    )
    conn.execute(stmt)


def list_spec_drift(conn: Connection) -> list[Row[Any]]:
    """Every unknown value seen, most frequent first."""
    return list(
        conn.execute(
            sa.select(spec_drift).order_by(
                spec_drift.c.count.desc(), spec_drift.c.field, spec_drift.c.value
            )
        )
    )


def export_sizes(
    conn: Connection, flt: ActivityFilter, *, after_id: int | None, limit: int
) -> list[tuple[int, int]]:
    """``(id, raw body bytes)`` of up to ``limit`` activities matching ``flt`` whose id is
    above ``after_id``, by id ascending: one keyset page of an export.

    Only ids and lengths: the export then reads the rows in groups bounded by bytes
    (:func:`export_rows`), so a page of large bodies never comes into memory at once.
    """
    pages = []
    for conditions in _branches(flt):
        stmt = sa.select(activities.c.id, sa.func.length(activities.c.raw).label("size")).where(
            *conditions
        )
        if after_id is not None:
            stmt = stmt.where(activities.c.id > after_id)
        pages.append(stmt.order_by(activities.c.id).limit(limit))
    if len(pages) > 1:
        merged = _union(pages)
        pages = [sa.select(merged.c.id, merged.c.size).order_by(merged.c.id).limit(limit)]
    rows = conn.execute(pages[0])
    return [(int(r[0]), int(r[1] or 0)) for r in rows]


def export_rows(
    conn: Connection, flt: ActivityFilter, first_id: int, last_id: int, *, raw: bool
) -> list[Row[Any]]:
    """The activities matching ``flt`` with ids from ``first_id`` to ``last_id``, by id
    ascending: ``id`` and ``raw`` with ``raw``, else every :data:`ACTIVITY_COLUMNS`
    column under its API name (no raw body), organizationId and locationId the
    activity's own or else its cached device's (as the read API shows them). A range of
    ids from :func:`export_sizes` (one range scan of the primary key, rather than
    thousands of parameters)."""
    shown = {"organizationId": _ORGANIZATION_ID, "locationId": _LOCATION_ID}
    columns: list[sa.ColumnElement[Any]] = (
        [activities.c.id, activities.c.raw]
        if raw
        else [shown.get(name, col).label(name) for name, col in ACTIVITY_COLUMNS.items()]
    )
    source = (
        activities if raw else activities.outerjoin(devices, devices.c.id == activities.c.device_id)
    )
    stmt = (
        sa.select(*columns)
        .select_from(source)
        .where(*_where(flt), activities.c.id >= first_id, activities.c.id <= last_id)
        .order_by(activities.c.id)
    )
    return list(conn.execute(stmt))
