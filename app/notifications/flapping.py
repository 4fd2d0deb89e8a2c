"""Flapping: a condition that fires again and again is notified once, saying so, and then
stays quiet until it calms down (a route's ``flapping``; README, "Routing").

A condition is a device and a condition's sourceConfigUid, across its alert keys: a check
that flaps opens and resets a new alert each time. Its firings are its stored TRIGGERED
activities. The delivery worker decides, when it claims a notification (never ingest):

* not flapping, and fewer than ``threshold`` firings arrived within ``window`` before
  this one: sent as usual;
* that many or more: the route marks the condition flapping and this notification says
  so (at every destination of the route);
* flapping: not sent (skipped, "flapping: …"), and the quiet lasts ``calm`` after this
  firing;
* flapping, but no firing came during ``calm``: the mark is gone and it is sent as usual.

A notification that was not sent has no "resolved" (the lifecycle rules); the one that
said "flapping" is resolved when its alert resets, like any other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Row

from app.notifications.routes import Route
from app.state import AppState
from app.storage import flapping as store
from app.storage.db import Database

SKIP_FLAPPING = "flapping"


@dataclass(frozen=True)
class FlapVerdict:
    """What flapping says about a notification: ``quiet`` (why it is not sent), or
    ``announce`` (the template's ``flapping``: this one says the condition flaps)."""

    quiet: str | None = None
    announce: dict[str, Any] | None = None


STEADY = FlapVerdict()


def condition_of(payload: dict[str, Any]) -> tuple[int, str] | None:
    """(deviceId, sourceConfigUid) of a CONDITION activity, or None."""
    device, source = payload.get("deviceId"), payload.get("sourceConfigUid")
    if not str(payload.get("activityType") or "").startswith("CONDITION"):
        return None
    if isinstance(device, bool) or not isinstance(device, int) or not isinstance(source, str):
        return None
    return (device, source) if source else None


def duration_text(seconds: float) -> str:
    """``90s``, ``30m``, ``1h``, ``2d``, or ``1h30m``: how a routes file writes it."""
    parts: list[str] = []
    left = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


def judge(db: Database, route: Route, row: Row[Any], payload: dict[str, Any]) -> FlapVerdict:
    """Whether a claimed notification is sent, quiet, or says its condition flaps; the
    firing's time is its arrival (``row.created_at``)."""
    rule = route.flapping
    condition = condition_of(payload)
    if rule is None or condition is None or row.event != "notify":
        return STEADY
    device, source = condition
    at = float(row.created_at)

    def announce(firings: int) -> FlapVerdict:
        return FlapVerdict(
            announce={
                "firings": firings,
                "window": duration_text(rule.window),
                "calm": duration_text(rule.calm),
            }
        )

    quiet = FlapVerdict(
        quiet=f"{SKIP_FLAPPING}: the condition flaps; quiet until it has not fired "
        f"for {duration_text(rule.calm)}"
    )
    with db.begin() as conn:
        state = store.flapping_state(conn, route.name, device, source)
        if state is not None:
            if state.marked_activity_id == row.activity_id:
                return announce(int(state.firings))
            if at < state.flapping_since:
                # It arrived before the firing that marked the condition (workers take
                # them in any order): below the threshold then, it goes out as usual.
                firings = store.count_firings(conn, device, source, at - rule.window, at)
                if firings < rule.threshold:
                    return STEADY
            elif store.end_flapping(conn, route.name, device, source, calm_since=at):
                return STEADY
            store.keep_quiet(conn, route.name, device, source, at + rule.calm)
            return quiet
        firings = store.count_firings(conn, device, source, at - rule.window, at)
        if firings < rule.threshold:
            return STEADY
        if store.mark_flapping(
            conn,
            route.name,
            device,
            source,
            activity_id=row.activity_id,
            firings=firings,
            now=at,
            quiet_until=at + rule.calm,
        ):
            return announce(firings)
        # Another worker marked it meanwhile: by this firing (another destination) or not.
        state = store.flapping_state(conn, route.name, device, source)
        if state is not None and state.marked_activity_id == row.activity_id:
            return announce(int(state.firings))
        store.keep_quiet(conn, route.name, device, source, at + rule.calm)
        return quiet


def quiet_now(conn: Connection, route: Route, payload: dict[str, Any], now: float) -> str | None:
    """Why a firing of this condition would stay quiet now (``routes test``), or None:
    the route has marked the condition flapping and it has not been calm since."""
    rule = route.flapping
    condition = condition_of(payload)
    if rule is None or condition is None:
        return None
    state = store.flapping_state(conn, route.name, *condition)
    if state is None or state.quiet_until <= now or state.marked_activity_id == payload.get("id"):
        return None
    return (
        f"{SKIP_FLAPPING}: the condition flaps; quiet until it has not fired "
        f"for {duration_text(rule.calm)}"
    )


# Days the dashboard's "noisiest conditions" table counts firings over.
NOISIEST_DAYS = 7


def alert_flapping(state: AppState, key: str) -> dict[str, Any] | None:
    """The dashboard's flapping badge of an alert: ``since`` and ``quietUntil``, or None
    when its condition does not flap now."""
    with state.db.connect() as conn:
        found = store.alert_flapping(conn, key, time.time())
    if found is None or found.flapping_since is None:
        return None
    return {"since": found.flapping_since, "quietUntil": found.quiet_until}


def flapping_keys(state: AppState, keys: list[str]) -> set[str]:
    """The alerts among ``keys`` (the open alerts shown) whose condition flaps now."""
    with state.db.connect() as conn:
        return store.flapping_keys(conn, keys, time.time())


def noisiest(state: AppState, limit: int = 10) -> list[dict[str, Any]]:
    """The conditions that fired most over the last NOISIEST_DAYS days, each with its
    device's name when cached and whether it flaps now: what to fix in the policy."""
    now = time.time()
    with state.db.connect() as conn:
        rows = store.noisiest_conditions(conn, now - NOISIEST_DAYS * 86400, limit)
        flapping = {(r.device_id, r.source_config_uid) for r in store.flapping_now(conn, now)}
    return [
        {
            "deviceId": r.device_id,
            "deviceName": r.device_name,
            "sourceConfigUid": r.source_config_uid,
            "sourceName": r.source_name,
            "firings": int(r.firings),
            "flapping": (r.device_id, r.source_config_uid) in flapping,
        }
        for r in rows
    ]
