"""Alerts: what is wrong right now, derived from CONDITION activities.

An alert is keyed by :func:`alert_key`. Its state is a pure function of its stored
activities folded in activityTime order (:func:`fold`): TRIGGERED opens it, RESET
closes it, ACKNOWLEDGED marks it acknowledged. Ingest links each new CONDITION
activity to its alert inside the same transaction and applies it to the stored
alert as one more fold step when it is the alert's newest activity. When it arrived
out of order, the few linked events that decide each column are found by index
seeks (:func:`_resolve`), so its cost does not grow with the alert's history either.
So the order of arrival and redeliveries cannot change the result, and ``alerts
rebuild`` (:func:`rebuild`) computes exactly the same rows from scratch.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from types import SimpleNamespace
from typing import Any

from sqlalchemy.engine import Connection

from app.activities.reads import activity_record, cut, finite, list_preview
from app.ingest.pipeline import StoredActivity
from app.ingest.text import SERIES_UID_LIMIT, bounded
from app.paging import page_of
from app.state import AppState
from app.storage import alerts as store

CONDITION_TYPES_PREFIX = "CONDITION"
TRIGGERED = "TRIGGERED"
ACKNOWLEDGED = "ACKNOWLEDGED"
# statusCodes that end a condition (NinjaOne resets a condition itself, or a PSA
# ticket callback resets it).
RESET_CODES = frozenset({"RESET", "CUSTOM_HEALTH_STATUS_RESET", "RESET_BY_PSA_TICKET_CALLBACK"})


def alert_key(payload: dict[str, object]) -> str | None:
    """The key of the alert a CONDITION activity belongs to, or None for other activities.

    The seriesUid (which equals NinjaOne's alert uid) when present, otherwise
    ``<deviceId>:<sourceConfigUid>``. Made storable like the seriesUid column
    (:func:`app.ingest.text.bounded`): NUL and lone surrogates become U+FFFD, and a key
    over 300 characters is cut to 300 ending in a hash of the whole, so distinct long
    keys stay distinct and a stored (already bounded) seriesUid gives the same key.
    """
    activity_type = payload.get("activityType")
    if not isinstance(activity_type, str) or not activity_type.startswith(CONDITION_TYPES_PREFIX):
        return None
    series = payload.get("seriesUid")
    if isinstance(series, str) and series:
        return bounded(series, SERIES_UID_LIMIT)
    device, source = payload.get("deviceId"), payload.get("sourceConfigUid")
    if device is None or not source:
        return None
    return bounded(f"{device}:{source}", SERIES_UID_LIMIT)


def key_of_event(event: Any) -> str | None:
    """:func:`alert_key` of a stored activity (a row with the stored column names).

    The stored ``device_id`` (deviceId, or the expanded device's id) stands in for
    deviceId, so ingest and rebuild derive the same key from the same row.
    """
    return alert_key(
        {
            "activityType": event.activity_type,
            "seriesUid": event.series_uid,
            "deviceId": event.device_id,
            "sourceConfigUid": event.source_config_uid,
        }
    )


class _Event:
    """Attribute access over a stored-columns dict (ingest's row) like over a Row."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)


def _order(event: Any) -> tuple[float, int]:
    # activityTime decides; the id breaks ties (and orders events without a time by
    # arrival, which is stored with the row and so the same in a rebuild).
    time = event.activity_time if event.activity_time is not None else event.received_at
    return (float(time), int(event.id))


def _initial() -> dict[str, Any]:
    """The alert columns before any activity (also what a freshly locked row holds)."""
    return {
        "state": "closed",
        "acknowledged": False,
        "opened_at": None,
        "closed_at": None,
        "device_id": None,
        "organization_id": None,
        "location_id": None,
        "severity": None,
        "priority": None,
        "activity_type": None,
        "source_name": None,
        "message": None,
        "last_activity_time": None,
        "last_activity_id": None,
    }


def _apply(alert: dict[str, Any], event: Any) -> None:
    """Apply one event to ``alert`` (in place): the single step of :func:`fold`."""
    when = _order(event)[0]
    status = event.status_code
    if status == TRIGGERED:
        if alert["state"] != "open":
            alert.update(state="open", opened_at=when, closed_at=None, acknowledged=False)
        alert.update(severity=event.severity, priority=event.priority, message=event.message)
    elif status in RESET_CODES:
        alert.update(state="closed", closed_at=when)
    elif status == ACKNOWLEDGED:
        alert["acknowledged"] = True
    for column in ("device_id", "organization_id", "location_id", "activity_type"):
        if getattr(event, column) is not None:
            alert[column] = getattr(event, column)
    if event.source_name is not None:
        alert["source_name"] = event.source_name
    if alert["message"] is None and event.message is not None:
        alert["message"] = event.message
    if alert["severity"] is None and event.severity is not None:
        alert["severity"] = event.severity
    alert.update(last_activity_time=when, last_activity_id=event.id)


def fold(events: Iterable[Any]) -> dict[str, Any]:
    """The alert columns that ``events`` (stored activities of one alert) add up to.

    Events are applied in activityTime order whatever order they are given in.
    Descriptive columns (device, organization, source) take the latest non-null
    value; severity, priority and message describe the latest TRIGGERED event.
    """
    alert = _initial()
    for event in sorted(events, key=_order):
        _apply(alert, event)
    return alert


def lock_batch_alerts(
    conn: Connection, rows: Sequence[Mapping[str, Any]]
) -> AbstractContextManager[None]:
    """The alerts stage's ``prepare`` for a batch: lock every alert its activities move
    in one statement (on PostgreSQL, one round trip for the batch rather than one each)."""
    keys = (key_of_event(SimpleNamespace(**row)) for row in rows)
    return store.locked_alerts(conn, [key for key in keys if key is not None])


def apply_new_activity(conn: Connection, _payload: dict[str, Any], stored: StoredActivity) -> None:
    """Ingest hook: link a new CONDITION activity to its alert and bring the alert up to date.

    The alert row holds the fold of its activities so far, up to its last applied
    one. An activity ordered after that one (the usual case) is applied to the row
    directly: the fold of all activities equals one more step from there. For an
    activity that sorts before it (a late or backfilled delivery, a flapping
    condition's concurrent senders), one statement of index seeks finds the events
    that decide the fold (:func:`_resolve`) instead of reading the whole history.
    Either way the result is what :func:`rebuild` computes.
    """
    row = stored.row
    activity_type = row.get("activity_type")
    if not isinstance(activity_type, str) or not activity_type.startswith(CONDITION_TYPES_PREFIX):
        return  # not an alert's activity: no statement at all
    event = _Event(row)
    key = key_of_event(event)
    if key is None:
        return
    current = store.lock_alert(conn, key)
    store.link_activity(conn, key, stored.id, link_columns(event))
    last_id = current["last_activity_id"]
    alert = {column: current[column] for column in _initial()}
    if last_id is None or _order(event) > (float(current["last_activity_time"]), int(last_id)):
        _apply(alert, event)
    else:
        _resolve(alert, store.fold_inputs(conn, key))
    store.write_alert(conn, key, alert)


def link_columns(event: Any) -> dict[str, Any]:
    """What an alert's link row keeps of ``event`` (app.storage.alerts.LINK_COLUMNS): the
    fold's ordering key, the status class and the values the fold takes from it."""
    status = event.status_code
    kind = (
        "T"
        if status == TRIGGERED
        else "R"
        if status in RESET_CODES
        else "A"
        if status == ACKNOWLEDGED
        else None
    )
    return {
        "order_time": _order(event)[0],
        "kind": kind,
        "severity": event.severity,
        "device_id": event.device_id,
        "organization_id": event.organization_id,
        "location_id": event.location_id,
        "source_name": event.source_name,
        "message_set": None if event.message is None else 1,
    }


def _resolve(alert: dict[str, Any], found: Mapping[str, Any]) -> None:
    """Set ``alert`` (the fold of its history but one out-of-order activity, which is
    linked already) to the fold of the whole history, from :func:`store.fold_inputs`.

    :func:`_apply` makes every column a function of a few events in fold order: the
    latest TRIGGERED or RESET decides the state; ``opened_at`` is the TRIGGERED that
    last found the alert not open (the first after the last RESET before the last
    TRIGGERED) and ``acknowledged`` says whether an ACKNOWLEDGED followed it; a closed
    alert was closed by its last RESET; severity, priority and message are the last
    TRIGGERED's, a null severity or message filled by the first later non-null one;
    the descriptive columns are the latest non-null values. The newest activity, and so
    ``last_activity_*`` and the activity type (every linked activity has one), stay.
    """
    triggered = found["triggered_id"]
    reset = found["reset_id"]
    is_open = triggered is not None and (
        reset is None
        or (float(found["triggered_time"]), int(triggered))
        > (float(found["reset_time"]), int(reset))
    )
    alert.update(
        state="open" if is_open else "closed",
        opened_at=found["opened_at"],
        closed_at=None if is_open or reset is None else found["reset_time"],
        acknowledged=bool(found["acknowledged"]),
        severity=found["severity"],
        priority=found["priority"],
        message=found["message"],
    )
    for column in ("device_id", "organization_id", "location_id", "source_name"):
        alert[column] = found[column]


def rebuild(conn: Connection, progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Recompute every alert from the stored activities, replacing what is stored.

    :param progress: called with the number of activities read so far, per batch.
    :returns: (alerts written, activities linked).
    """
    grouped: dict[str, list[Any]] = defaultdict(list)
    read = 0
    for batch in store.condition_events(conn):
        for event in batch:
            key = key_of_event(event)
            if key is not None:
                grouped[key].append(event)
        read += len(batch)
        if progress is not None:
            progress(read)
    rows = [{"key": key, **fold(events)} for key, events in grouped.items()]
    links = [
        {"alert_key": key, "activity_id": event.id, **link_columns(event)}
        for key, events in grouped.items()
        for event in events
    ]
    store.replace_all(conn, rows, links)
    return len(rows), len(links)


# An alert's ``ref``: its key as URL-safe base64 without padding, after this prefix.
# A key may hold any character (NinjaOne's seriesUid, or ``<deviceId>:<sourceConfigUid>``),
# and a ``/`` in a path segment (even as %2F, which is decoded before routing) cannot
# reach /alerts/{key}; a ref never holds anything but [A-Za-z0-9_-] after the ``~``.
REF_PREFIX = "~"


def alert_ref(key: str) -> str:
    """The path segment that opens an alert at /alerts/{key} and /ui/alerts/{key}."""
    return REF_PREFIX + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def keys_for(ref: str) -> list[str]:
    """The alert keys a path segment may name, in the order to try them: the key a
    ``~`` ref encodes, then the segment itself (the plain key, for keys without ``/``)."""
    keys: list[str] = []
    if ref.startswith(REF_PREFIX):
        encoded = ref[len(REF_PREFIX) :]
        try:
            key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (binascii.Error, ValueError):
            pass  # not a ref (UnicodeDecodeError is a ValueError)
        else:
            if alert_ref(key) == ref:  # the canonical encoding only
                keys.append(key)
    keys.append(ref)
    return keys


def alert_record(row: Any, preview: int | None = None) -> dict[str, Any]:
    """An Alert (webhook.yaml) from a row of :func:`app.storage.alerts.list_alerts`.

    With ``preview`` (a row read with it), the message is a preview and
    ``messageTruncated`` says whether it was cut. ``ref`` opens the alert at
    /alerts/{key} whatever characters the key holds.
    """
    message, message_cut = cut(row.message, preview)
    return {
        "key": row.key,
        "ref": alert_ref(row.key),
        "state": row.state,
        "acknowledged": bool(row.acknowledged),
        "deviceId": row.device_id,
        "deviceName": row.device_name,
        "organizationId": row.organization_id,
        "organizationName": row.organization_name,
        "locationId": row.location_id,
        "locationName": row.location_name,
        "severity": row.severity,
        "priority": row.priority,
        "activityType": row.activity_type,
        "sourceName": row.source_name,
        "message": message,
        "messageTruncated": message_cut,
        "openedAt": finite(row.opened_at),
        "closedAt": finite(row.closed_at),
        "lastActivityTime": finite(row.last_activity_time),
        "lastActivityId": row.last_activity_id,
    }


def alert_page(
    state: AppState, flt: store.AlertFilter, *, limit: int, before_id: int | None
) -> dict[str, Any]:
    """One page of alerts, most recently active first, with the next page's cursor;
    messages are previews (NINJAHOOK_PREVIEW_CHARS)."""
    chars = state.config.preview_chars
    with state.db.connect() as conn:
        rows = store.list_alerts(conn, flt, limit=limit + 1, before_id=before_id, preview=chars)
    return page_of(rows, limit, lambda row: alert_record(row, chars), "lastActivityId")


def ranked_alerts(
    state: AppState, flt: store.AlertFilter, *, limit: int, offset: int = 0
) -> dict[str, Any]:
    """A page of alerts worst severity first (then the most recently opened), for the
    dashboard: ``items`` (messages are previews), and ``bySeverity`` and ``total``, exact
    counts of every alert matching ``flt`` (severity None: none given)."""
    chars = state.config.preview_chars
    with state.db.connect() as conn:
        rows = store.alerts_by_rank(conn, flt, limit=limit, offset=offset, preview=chars)
        by_severity = store.alerts_by_severity(conn, flt)
    return {
        "items": [alert_record(row, chars) for row in rows],
        "bySeverity": by_severity,
        "total": sum(by_severity.values()),
    }


def alert_detail(state: AppState, ref: str) -> dict[str, Any] | None:
    """One alert with its activity history (oldest first), or None.

    ``ref`` is the alert's ``ref`` (:func:`alert_ref`) or, for a key without ``/``, the
    key itself. The alert's message is whole; the history is a list, so its activities
    are previews (each one whole at /activities/{id}).
    """
    preview = list_preview(state)
    with state.db.connect() as conn:
        for key in keys_for(ref):
            row = store.get_alert(conn, key)
            if row is not None and row.last_activity_id is not None:
                history = store.alert_history(conn, key, preview=preview)
                return {
                    **alert_record(row),
                    "history": [activity_record(r, preview) for r in history],
                }
    return None
