"""Operator actions: acknowledge an alert, reset its condition in NinjaOne, retry a dead
letter; each is recorded with who did it (the operator token's label) and when."""

from __future__ import annotations

import json
import time
from typing import Any

from app.alerts import service as alerts
from app.ninjaone.client import NinjaOneClient, NinjaOneError, NinjaOneNotConfigured
from app.notifications.matching import describe
from app.notifications.reads import retry_dead_letters
from app.silences.service import create_silence, get_silence, silences_changed, silences_for
from app.state import AppState
from app.storage import activities as activity_store
from app.storage import silences as store
from app.storage.notifications import NotificationFilter
from app.timeparse import iso

ACTIONS = ("silence", "expire-silence", "acknowledge", "reset", "retry")


class OperatorActionFailed(Exception):
    """An operator action could not be done; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def action_record(row: Any) -> dict[str, Any]:
    """An OperatorAction (webhook.yaml) from its row."""
    return {
        "id": row.id,
        "at": iso(row.at),
        "actor": row.actor,
        "action": row.action,
        "alertKey": row.alert_key,
        "target": row.target,
        "detail": row.detail,
    }


def _record(
    state: AppState,
    *,
    actor: str,
    action: str,
    alert_key: str | None,
    target: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    with state.db.begin() as conn:
        action_id = store.insert_action(
            conn,
            actor=actor,
            action=action,
            alert_key=alert_key,
            target=target,
            detail=detail,
            now=time.time(),
        )
        row = store.get_action(conn, action_id)
    return action_record(row)


def _last_payload(state: AppState, detail: dict[str, Any]) -> dict[str, Any]:
    """The payload of the alert's latest activity (its seriesUid, condition, device)."""
    last_id = detail.get("lastActivityId")
    if last_id is None:
        return {}
    with state.db.connect() as conn:
        raw = activity_store.get_activity_raw(conn, int(last_id))
    payload = json.loads(raw) if raw is not None else {}
    return payload if isinstance(payload, dict) else {}


def acknowledge_alert(
    state: AppState, ref: str, actor: str, comment: str | None = None
) -> dict[str, Any] | None:
    """Record that ``actor`` acknowledged the alert; None when there is no such alert."""
    detail = alerts.alert_detail(state, ref)
    if detail is None:
        return None
    return _record(
        state, actor=actor, action="acknowledge", alert_key=detail["key"], detail=comment
    )


def reset_alert(
    state: AppState,
    ref: str,
    actor: str,
    comment: str | None = None,
    client: NinjaOneClient | None = None,
) -> dict[str, Any] | None:
    """Reset the alert's condition in NinjaOne (``DELETE /v2/alert/{seriesUid}``) and
    record it; None when there is no such alert.

    :raises OperatorActionFailed: 409 without a NinjaOne uid or credentials, 502 when
        NinjaOne refuses or fails.
    """
    detail = alerts.alert_detail(state, ref)
    if detail is None:
        return None
    uid = _last_payload(state, detail).get("seriesUid")
    if not isinstance(uid, str) or not uid:
        raise OperatorActionFailed(
            409, "this alert has no seriesUid, which NinjaOne resets a condition by"
        )
    try:
        if client is not None:
            client.reset_alert(uid)
        else:
            with NinjaOneClient.from_config(state.config) as own:
                own.reset_alert(uid)
    except NinjaOneNotConfigured as exc:
        raise OperatorActionFailed(409, str(exc)) from None
    except NinjaOneError as exc:
        raise OperatorActionFailed(502, str(exc)) from None
    note = f"NinjaOne alert {uid} reset" + (f": {comment}" if comment else "")
    return _record(state, actor=actor, action="reset", alert_key=detail["key"], detail=note)


def retry_delivery(state: AppState, delivery_uid: str, actor: str) -> dict[str, Any] | None:
    """Queue one dead letter again and record it; None when no dead letter has that id."""
    if not retry_dead_letters(state.db, NotificationFilter(uid=delivery_uid)):
        return None
    with state.db.connect() as conn:
        key = store.delivery_alert_key(conn, delivery_uid)
    return _record(state, actor=actor, action="retry", alert_key=key, target=delivery_uid)


def list_actions(state: AppState, alert_key: str | None, limit: int) -> dict[str, Any]:
    """Operator actions, newest first (on one alert when ``alert_key`` is given)."""
    with state.db.connect() as conn:
        rows = store.list_actions(conn, alert_key=alert_key, limit=limit)
    return {"items": [action_record(r) for r in rows]}


def alert_with_actions(state: AppState, ref: str) -> dict[str, Any] | None:
    """An alert's detail (:func:`app.alerts.service.alert_detail`) with what operators
    did to it and the silences in force that match its latest activity."""
    detail = alerts.alert_detail(state, ref)
    if detail is None:
        return None
    payload = _last_payload(state, detail)
    with state.db.connect() as conn:
        actions = store.list_actions(conn, alert_key=detail["key"])
        silences = silences_for(conn, describe(conn, payload), time.time()) if payload else []
    return {
        **detail,
        "operatorActions": [action_record(r) for r in actions],
        "silences": silences,
    }


def alert_matchers(key: str, payload: dict[str, Any]) -> dict[str, Any]:
    """What "silence this condition on this device" matches for an alert: its condition
    (sourceConfigUid) on its device, or the alert itself when either is unknown."""
    device, condition = payload.get("deviceId"), payload.get("sourceConfigUid")
    if isinstance(device, int) and not isinstance(device, bool) and condition:
        return {"device": [device], "sourceConfigUid": condition}
    return {"alertKey": key}


def silence_alert(
    state: AppState, ref: str, actor: str, duration: str, comment: str
) -> dict[str, Any] | None:
    """Silence the alert's condition on its device for ``duration`` (the dashboard's
    button); the Silence, or None when there is no such alert.

    :raises app.silences.service.SilenceError: a bad duration or comment.
    """
    detail = alerts.alert_detail(state, ref)
    if detail is None:
        return None
    matchers = alert_matchers(detail["key"], _last_payload(state, detail))
    now = time.time()
    with state.db.begin() as conn:
        silence_id = create_silence(
            conn,
            matchers=matchers,
            comment=comment,
            created_by=actor,
            now=now,
            duration=duration,
            action_alert_key=detail["key"],
        )
    silences_changed()
    return get_silence(state, silence_id)
