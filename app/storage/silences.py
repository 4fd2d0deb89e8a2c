"""Silences and operator actions: SQL only (the logic is app.silences)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from app.storage.tables import deliveries, devices, operator_actions, silences

# A silence's state at a given time, as Alertmanager names them.
PENDING, ACTIVE, EXPIRED = "pending", "active", "expired"


@dataclass(frozen=True)
class Suppression:
    """Why a notification is recorded as suppressed instead of being sent."""

    reason: str
    silence_id: int | None = None


def insert_silence(
    conn: Connection,
    *,
    matchers: str,
    starts_at: float,
    ends_at: float,
    created_by: str,
    comment: str,
    now: float,
) -> int:
    """Store a silence; returns its id."""
    new_id = conn.execute(
        sa.insert(silences)
        .values(
            matchers=matchers,
            starts_at=starts_at,
            ends_at=ends_at,
            created_at=now,
            created_by=created_by,
            comment=comment,
        )
        .returning(silences.c.id)
    ).scalar_one()
    return int(new_id)


def get_silence(conn: Connection, silence_id: int) -> Row[Any] | None:
    """One silence, or None."""
    return conn.execute(sa.select(silences).where(silences.c.id == silence_id)).first()


def list_silences(
    conn: Connection, now: float, state: str | None, *, limit: int, before_id: int | None
) -> list[Row[Any]]:
    """Silences in ``state`` at ``now`` (any state when None), newest first."""
    c = silences.c
    stmt = sa.select(silences)
    if state == ACTIVE:
        stmt = stmt.where(c.starts_at <= now, c.ends_at > now)
    elif state == PENDING:
        stmt = stmt.where(c.starts_at > now, c.ends_at > now)
    elif state == EXPIRED:
        stmt = stmt.where(c.ends_at <= now)
    if before_id is not None:
        stmt = stmt.where(c.id < before_id)
    return list(conn.execute(stmt.order_by(c.id.desc()).limit(limit)).all())


def active_silences(conn: Connection, now: float) -> list[Row[Any]]:
    """The silences in force at ``now`` (a range read of the ends_at index), oldest first."""
    c = silences.c
    stmt = sa.select(silences).where(c.ends_at > now, c.starts_at <= now).order_by(c.id)
    return list(conn.execute(stmt).all())


def silences_overlapping(conn: Connection, start: float, end: float) -> list[Row[Any]]:
    """The silences in force at some moment of [``start``, ``end``), oldest first."""
    c = silences.c
    stmt = sa.select(silences).where(c.ends_at > start, c.starts_at < end).order_by(c.id)
    return list(conn.execute(stmt).all())


def expire_silence(conn: Connection, silence_id: int, now: float, expired_by: str) -> bool:
    """End a silence now; False when there is no such silence or it has ended already."""
    c = silences.c
    changed = conn.execute(
        sa.update(silences)
        .where(c.id == silence_id, c.ends_at > now)
        .values(ends_at=now, expired_at=now, expired_by=expired_by)
    )
    return bool(changed.rowcount)


def device_maintenance(conn: Connection, device_id: int) -> Any:
    """The ``maintenance`` object of the cached device (None when unknown)."""
    raw = conn.execute(sa.select(devices.c.raw).where(devices.c.id == device_id)).scalar()
    return raw.get("maintenance") if isinstance(raw, dict) else None


def insert_action(
    conn: Connection,
    *,
    actor: str,
    action: str,
    alert_key: str | None,
    target: str | None,
    detail: str | None,
    now: float,
) -> int:
    """Record an operator action; returns its id."""
    new_id = conn.execute(
        sa.insert(operator_actions)
        .values(
            at=now,
            actor=actor,
            action=action,
            alert_key=alert_key,
            target=target,
            detail=detail,
        )
        .returning(operator_actions.c.id)
    ).scalar_one()
    return int(new_id)


def list_actions(
    conn: Connection, *, alert_key: str | None = None, limit: int = 200
) -> list[Row[Any]]:
    """Operator actions (on one alert when ``alert_key`` is given), newest first."""
    c = operator_actions.c
    stmt = sa.select(operator_actions)
    if alert_key is not None:
        stmt = stmt.where(c.alert_key == alert_key)
    return list(conn.execute(stmt.order_by(c.id.desc()).limit(limit)).all())


def get_action(conn: Connection, action_id: int) -> Row[Any]:
    """One operator action (it exists: the caller has just stored it)."""
    return conn.execute(sa.select(operator_actions).where(operator_actions.c.id == action_id)).one()


def delivery_alert_key(conn: Connection, delivery_uid: str) -> str | None:
    """The alert key of a delivery (None for an activity outside conditions)."""
    key = conn.execute(
        sa.select(deliveries.c.alert_key).where(deliveries.c.uid == delivery_uid)
    ).scalar()
    return str(key) if key is not None else None
