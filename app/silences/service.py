"""Silences: creating, listing and expiring them, and deciding at ingest what they
(and a device's maintenance) suppress.

A silence's matchers are a route's ``match`` expression (app.notifications.routes,
validated by the same parser) plus ``sourceConfigUid`` (a condition) and ``alertKey``
(one alert). An activity is silenced when every matcher of a silence in force matches.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Row

from app.alerts.service import alert_key
from app.notifications.matching import Subject, describe, matches
from app.notifications.routes import Match, Route, RoutesError, parse_match
from app.paging import page_of
from app.state import AppState
from app.storage import silences as store
from app.storage.silences import Suppression
from app.timeparse import iso, parse_instant

# Keys a silence has beyond a route's match expression.
SOURCE_CONFIG_UID = "sourceConfigUid"
ALERT_KEY = "alertKey"
STATES = (store.PENDING, store.ACTIVE, store.EXPIRED)
LONGEST = 366 * 86400.0
COMMENT_LIMIT = 2000
AUTHOR_LIMIT = 200
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)


class SilenceError(ValueError):
    """A silence cannot be created as asked; the message says why."""


@dataclass(frozen=True)
class Matchers:
    """A silence's parsed matchers."""

    match: Match
    source_config_uids: frozenset[str] | None = None
    alert_keys: frozenset[str] | None = None

    def matches(self, subject: Subject, key: str | None) -> bool:
        """True when ``subject`` (whose alert key is ``key``) meets every matcher."""
        if self.alert_keys is not None and key not in self.alert_keys:
            return False
        if self.source_config_uids is not None and (
            subject.activity.get(SOURCE_CONFIG_UID) not in self.source_config_uids
        ):
            return False
        return matches(self.match, subject)


def _strings(value: Any, where: str) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise SilenceError(f"matchers.{where}: expected a non-empty string or a list of them")
    return frozenset(values)


def parse_matchers(data: Any) -> Matchers:
    """Validate a silence's matchers (a JSON object).

    :raises SilenceError: naming the matcher and the cause.
    """
    if not isinstance(data, Mapping) or not data:
        raise SilenceError(
            "matchers: expected an object with at least one matcher (a silence without "
            "one would silence everything)"
        )
    rest = {k: v for k, v in data.items() if k not in (SOURCE_CONFIG_UID, ALERT_KEY)}
    try:
        match = parse_match(rest, "matchers") if rest else Match()
    except RoutesError as exc:
        raise SilenceError(str(exc)) from None
    return Matchers(
        match=match,
        source_config_uids=_strings(data[SOURCE_CONFIG_UID], SOURCE_CONFIG_UID)
        if SOURCE_CONFIG_UID in data
        else None,
        alert_keys=_strings(data[ALERT_KEY], ALERT_KEY) if ALERT_KEY in data else None,
    )


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``4h``, ``1d``, ``2w`` (a bare number is seconds).

    :raises SilenceError: not a duration, or not positive.
    """
    found = _DURATION.match(text)
    if found is None:
        raise SilenceError(f"duration: {text!r} is not a duration (like 30m, 4h or 1d)")
    seconds = float(found.group(1)) * _UNITS[(found.group(2) or "s").lower()]
    if seconds <= 0:
        raise SilenceError("duration: must be longer than zero")
    return seconds


def _instant(value: Any, where: str, now: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        instant = float(value)
    elif isinstance(value, str):
        try:
            instant = parse_instant(value, allow_age=False, now=now)
        except ValueError as exc:
            raise SilenceError(f"{where}: {exc}") from None
    else:
        raise SilenceError(f"{where}: expected a time (ISO 8601 or epoch seconds)")
    if not math.isfinite(instant):
        raise SilenceError(f"{where}: expected a time (ISO 8601 or epoch seconds)")
    return instant


def silence_window(
    now: float,
    *,
    starts_at: Any = None,
    ends_at: Any = None,
    duration: str | float | None = None,
) -> tuple[float, float]:
    """When a silence starts and ends: ``starts_at`` (default now) and ``ends_at`` or
    ``duration`` after the start (exactly one of the two).

    :raises SilenceError: a bad time, an end not after the start, over a year long.
    """
    start = _instant(starts_at, "startsAt", now) if starts_at is not None else now
    if (ends_at is None) == (duration is None):
        raise SilenceError("give endsAt or duration (one of the two)")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, str | int | float):
            raise SilenceError("duration: expected a duration (like 30m, 4h or 1d)")
        length = parse_duration(duration) if isinstance(duration, str) else float(duration)
        if not 0 < length < math.inf:
            raise SilenceError("duration: must be longer than zero")
        end = start + length
    else:
        end = _instant(ends_at, "endsAt", now)
    if end <= max(start, now):
        raise SilenceError("endsAt: must be after startsAt and in the future")
    if end - start > LONGEST:
        raise SilenceError("a silence lasts at most a year")
    return start, end


def _text(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SilenceError(f"{where}: required (a non-empty string)")
    if len(value) > limit:
        raise SilenceError(f"{where}: at most {limit} characters")
    return value.strip()


def silence_state(row: Any, now: float) -> str:
    """pending, active or expired at ``now``."""
    if row.ends_at <= now:
        return store.EXPIRED
    return store.PENDING if row.starts_at > now else store.ACTIVE


def silence_record(row: Row[Any], now: float) -> dict[str, Any]:
    """A Silence (webhook.yaml) from its row."""
    return {
        "id": row.id,
        "matchers": json.loads(row.matchers),
        "startsAt": iso(row.starts_at),
        "endsAt": iso(row.ends_at),
        "createdAt": iso(row.created_at),
        "createdBy": row.created_by,
        "comment": row.comment,
        "state": silence_state(row, now),
        "expiredAt": iso(row.expired_at) if row.expired_at is not None else None,
        "expiredBy": row.expired_by,
    }


def create_silence(
    conn: Connection,
    *,
    matchers: Any,
    comment: Any,
    created_by: str,
    now: float,
    starts_at: Any = None,
    ends_at: Any = None,
    duration: str | float | None = None,
    action_alert_key: str | None = None,
) -> int:
    """Validate and store a silence, recording the action (on ``action_alert_key``, or
    on the one alert the matchers name); returns its id.

    :raises SilenceError: naming what is wrong.
    """
    parsed = parse_matchers(matchers)
    start, end = silence_window(now, starts_at=starts_at, ends_at=ends_at, duration=duration)
    text = _text(comment, "comment", COMMENT_LIMIT)
    author = _text(created_by, "createdBy", AUTHOR_LIMIT)
    stored = json.dumps(dict(matchers), sort_keys=True, ensure_ascii=False)
    silence_id = store.insert_silence(
        conn,
        matchers=stored,
        starts_at=start,
        ends_at=end,
        created_by=author,
        comment=text,
        now=now,
    )
    keys = sorted(parsed.alert_keys or ())
    store.insert_action(
        conn,
        actor=author,
        action="silence",
        alert_key=action_alert_key or (keys[0] if len(keys) == 1 else None),
        target=str(silence_id),
        detail=f"until {iso(end)}: {text}",
        now=now,
    )
    return silence_id


# Bumped after a transaction that added or expired a silence commits, so this process's
# Suppressor reads the silences again at once.
_CHANGES = [0]


def silences_changed() -> None:
    """Call after committing a new or expired silence."""
    _CHANGES[0] += 1


def add_silence(state: AppState, **kwargs: Any) -> dict[str, Any]:
    """:func:`create_silence` in its own transaction; returns the new Silence."""
    now = time.time()
    with state.db.begin() as conn:
        silence_id = create_silence(conn, now=now, **kwargs)
        row = store.get_silence(conn, silence_id)
    silences_changed()
    assert row is not None
    return silence_record(row, now)


def silence_page(
    state: AppState, silence_state: str | None, *, limit: int, before_id: int | None
) -> dict[str, Any]:
    """A page of silences, newest first, in one state (any when None)."""
    now = time.time()
    with state.db.connect() as conn:
        rows = store.list_silences(conn, now, silence_state, limit=limit + 1, before_id=before_id)
    return page_of(rows, limit, lambda r: silence_record(r, now), "id")


def get_silence(state: AppState, silence_id: int) -> dict[str, Any] | None:
    """One Silence, or None."""
    with state.db.connect() as conn:
        row = store.get_silence(conn, silence_id)
    return silence_record(row, time.time()) if row is not None else None


def expire_silence(
    state: AppState, silence_id: int, expired_by: str, action_alert_key: str | None = None
) -> dict[str, Any] | None:
    """End a silence now (recording the action, on ``action_alert_key`` or on the one
    alert the matchers name); the Silence, or None when there is none. A silence that
    has ended already is left as it is."""
    now = time.time()
    with state.db.begin() as conn:
        if store.expire_silence(conn, silence_id, now, expired_by):
            row = store.get_silence(conn, silence_id)
            assert row is not None
            keys = parse_matchers(json.loads(row.matchers)).alert_keys or frozenset()
            store.insert_action(
                conn,
                actor=expired_by,
                action="expire-silence",
                alert_key=action_alert_key or (next(iter(keys)) if len(keys) == 1 else None),
                target=str(silence_id),
                detail=None,
                now=now,
            )
        row = store.get_silence(conn, silence_id)
    silences_changed()
    return silence_record(row, now) if row is not None else None


def silences_for(conn: Connection, subject: Subject, now: float) -> list[dict[str, Any]]:
    """The silences in force at ``now`` that match ``subject`` (for an alert's page)."""
    key = alert_key(subject.activity)
    found = []
    for row in store.active_silences(conn, now):
        if _parsed(row.matchers).matches(subject, key):
            found.append(silence_record(row, now))
    return found


# --- at ingest ------------------------------------------------------------------------

# Parsed matchers by their stored JSON (a silence's matchers never change), so each is
# parsed once per process however many activities it is checked against.
_PARSED: dict[str, Matchers] = {}
_PARSED_LIMIT = 4096
_PARSED_LOCK = threading.Lock()


def _parsed(matchers: str) -> Matchers:
    with _PARSED_LOCK:
        found = _PARSED.get(matchers)
    if found is None:
        try:
            found = parse_matchers(json.loads(matchers))
        except (SilenceError, ValueError):
            # Stored by an older or newer version with keys this one does not know:
            # it matches nothing rather than everything.
            found = Matchers(match=Match(activity_types=frozenset()))
        with _PARSED_LOCK:
            if len(_PARSED) >= _PARSED_LIMIT:
                _PARSED.clear()
            _PARSED[matchers] = found
    return found


def maintenance_until(maintenance: Any, now: float) -> float | None:
    """When the maintenance window of a cached device ends, if it covers ``now``
    (``math.inf`` for a window without an end); None when the device is not in one.

    NinjaOne's ``maintenance`` has ``status`` (PENDING, IN_MAINTENANCE, FAILED),
    ``start`` and ``end`` (epoch seconds; milliseconds are recognised). A FAILED
    window suppresses nothing; the times decide otherwise, so a cache that has not
    seen the status change yet still judges by the window.
    """
    if not isinstance(maintenance, Mapping) or maintenance.get("status") == "FAILED":
        return None

    def seconds(value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) / 1000 if value > 1e11 else float(value)

    start, end = seconds(maintenance.get("start")), seconds(maintenance.get("end"))
    if start is None and maintenance.get("status") != "IN_MAINTENANCE":
        return None
    if start is not None and now < start:
        return None
    if end is not None and now >= end:
        return None
    return end if end is not None else math.inf


class Suppressor:
    """What holds back a route's notification of an activity: a silence in force that
    matches it, or (unless the route has ``ignore_maintenance``) its device's
    maintenance window in the entity cache.

    Called inside the ingest transaction for each route that would notify; the
    silences (one range read of an index) and the device's maintenance (one primary
    key read) are read once per activity, and only when a route would notify.
    """

    # Silences are read at most once a second per process rather than once per
    # activity: that read was most of routing's cost at ingest. A silence added or
    # expired in this process applies at once (``_CHANGES``); one added through another
    # worker or host applies within this many seconds.
    SILENCES_TTL = 1.0

    def __init__(self, *, at_ingest: bool = True) -> None:
        # At ingest an expanded device in the payload is what the cache has just stored;
        # later (``routes test``) the cache may know better, so it is read.
        self._at_ingest = at_ingest
        self._local = threading.local()
        self._silences: tuple[float, int, list[Row[Any]]] | None = None

    def __call__(
        self, conn: Connection, subject: Subject, route: Route, now: float
    ) -> Suppression | None:
        memo = getattr(self._local, "memo", None)
        if memo is None or memo[0] is not subject:
            memo = [subject, None, None]
            self._local.memo = memo
        if memo[1] is None:
            memo[1] = (self._silenced(conn, subject, now),)
        silenced: Suppression | None = memo[1][0]
        if silenced is not None:
            return silenced
        if route.ignore_maintenance:
            return None
        if memo[2] is None:
            memo[2] = (self._in_maintenance(conn, subject, now),)
        in_maintenance: Suppression | None = memo[2][0]
        return in_maintenance

    def _in_force(self, conn: Connection, now: float) -> list[Row[Any]]:
        cached = self._silences
        if (
            cached is None
            or cached[1] != _CHANGES[0]
            or not cached[0] <= now < cached[0] + self.SILENCES_TTL
        ):
            changes = _CHANGES[0]
            rows = store.silences_overlapping(conn, now, now + self.SILENCES_TTL)
            cached = self._silences = (now, changes, rows)
        return [row for row in cached[2] if row.starts_at <= now < row.ends_at]

    def _silenced(self, conn: Connection, subject: Subject, now: float) -> Suppression | None:
        in_force = self._in_force(conn, now)
        if not in_force:
            return None
        # The outbox reads the entity cache only for routes that need it; a silence by
        # organization, device or node class needs it too.
        subject = describe(conn, subject.activity)
        key = alert_key(subject.activity)
        for row in in_force:
            if _parsed(row.matchers).matches(subject, key):
                return Suppression(
                    reason=f"silence {row.id} by {row.created_by} until {iso(row.ends_at)}: "
                    f"{row.comment}",
                    silence_id=row.id,
                )
        return None

    def _in_maintenance(self, conn: Connection, subject: Subject, now: float) -> Suppression | None:
        device_id = subject.device.get("id")
        if not isinstance(device_id, int) or isinstance(device_id, bool):
            return None
        expanded = subject.activity.get("device")
        if self._at_ingest and isinstance(expanded, Mapping) and expanded.get("id") == device_id:
            # The entities stage has just cached this very object: no need to read it.
            maintenance = expanded.get("maintenance")
        else:
            maintenance = store.device_maintenance(conn, device_id)
        until = maintenance_until(maintenance, now)
        if until is None:
            return None
        end = "with no end" if until == math.inf else f"until {iso(until)}"
        return Suppression(reason=f"device {device_id} is in maintenance {end}")
