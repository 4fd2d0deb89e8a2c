"""Dashboard sessions: SQL only (the logic is app.web.sessions)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from app.storage.tables import dashboard_sessions as sessions


def insert_session(
    conn: Connection,
    id_hash: str,
    now: float,
    expires_at: float,
    *,
    role: str = "read",
    actor: str | None = None,
) -> None:
    """Store a new session (by the hash of its id), with the role and label of the token
    it logged in with."""
    conn.execute(
        sa.insert(sessions).values(
            id_hash=id_hash,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
            role=role,
            actor=actor,
        )
    )


def get_session(conn: Connection, id_hash: str) -> Row[Any] | None:
    """The session with this id hash, or None."""
    return conn.execute(sa.select(sessions).where(sessions.c.id_hash == id_hash)).first()


def touch_session(conn: Connection, id_hash: str, now: float) -> None:
    """Record that the session was used at ``now``."""
    conn.execute(
        sa.update(sessions)
        .where(sessions.c.id_hash == id_hash, sessions.c.last_seen_at < now)
        .values(last_seen_at=now)
    )


def delete_session(conn: Connection, id_hash: str) -> int:
    """Delete one session; returns how many rows went (0 or 1)."""
    return conn.execute(sa.delete(sessions).where(sessions.c.id_hash == id_hash)).rowcount


def delete_expired_sessions(conn: Connection, now: float, idle: float) -> int:
    """Delete every session past its absolute limit, or idle for ``idle`` seconds (when
    ``idle`` is positive); returns how many went."""
    expired = sessions.c.expires_at <= now
    if idle > 0:
        expired = sa.or_(expired, sessions.c.last_seen_at <= now - idle)
    return conn.execute(sa.delete(sessions).where(expired)).rowcount
