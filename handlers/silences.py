"""Handlers for silences and operator actions (reading: a read token; acting: an
operator token, whose label the action is recorded under)."""

from __future__ import annotations

from typing import Any

from connexion import context, problem

from app.silences import operator
from app.silences import service as silences
from app.web.context import JSON, app_state, decode_cursor


def _actor() -> str:
    """The label of the operator token of this request (webhook.yaml's operatorBearer)."""
    return str(context.context["token_info"]["sub"])


def list_silences(
    state: str = "all", limit: int = 50, cursor: str | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A page of silences, newest first."""
    page = silences.silence_page(
        app_state(),
        None if state == "all" else state,
        limit=limit,
        before_id=decode_cursor(cursor, bits=32),
    )
    return page, 200, JSON


def create_silence(body: dict[str, Any]) -> Any:
    """Store a silence created by this operator."""
    try:
        created = silences.add_silence(
            app_state(),
            matchers=body.get("matchers"),
            comment=body.get("comment"),
            created_by=_actor(),
            starts_at=body.get("startsAt"),
            ends_at=body.get("endsAt"),
            duration=body.get("duration"),
        )
    except silences.SilenceError as exc:
        return problem(400, "Bad Request", str(exc))
    return created, 201, JSON


def get_silence(id_: int) -> Any:
    """One silence."""
    found = silences.get_silence(app_state(), id_)
    if found is None:
        return problem(404, "Not Found", f"no silence with id {id_}")
    return found, 200, JSON


def expire_silence(id_: int) -> Any:
    """End a silence now."""
    expired = silences.expire_silence(app_state(), id_, _actor())
    if expired is None:
        return problem(404, "Not Found", f"no silence with id {id_}")
    return expired, 200, JSON


def acknowledge_alert(key: str, comment: str | None = None) -> Any:
    """Record that this operator acknowledged the alert."""
    done = operator.acknowledge_alert(app_state(), key, _actor(), comment)
    if done is None:
        return problem(404, "Not Found", f"no alert with key {key!r}")
    return done, 200, JSON


def reset_alert(key: str, comment: str | None = None) -> Any:
    """Reset the alert's condition in NinjaOne."""
    try:
        done = operator.reset_alert(app_state(), key, _actor(), comment)
    except operator.OperatorActionFailed as exc:
        title = "Conflict" if exc.status == 409 else "Bad Gateway"
        return problem(exc.status, title, exc.detail)
    if done is None:
        return problem(404, "Not Found", f"no alert with key {key!r}")
    return done, 200, JSON


def retry_delivery(id_: str) -> Any:
    """Queue one dead letter again."""
    done = operator.retry_delivery(app_state(), id_, _actor())
    if done is None:
        return problem(404, "Not Found", f"no dead letter with id {id_!r}")
    return done, 200, JSON


def list_operator_actions(
    alert_key: str | None = None, limit: int = 50
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Operator actions, newest first."""
    return operator.list_actions(app_state(), alert_key, limit), 200, JSON
