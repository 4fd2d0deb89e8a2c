"""Dashboard sessions: random ids kept (hashed) in the database, with idle and absolute
limits, revoked at logout; and the forms' CSRF check.

The cookie holds a random session id. The database holds its SHA-256 with the time of
login, of last use and of the absolute expiry (``NINJAHOOK_SESSION_MAX`` after login); a
session unused for ``NINJAHOOK_SESSION_IDLE`` has ended too. Being in the database, a
session is valid on every worker and host, and a logout ends it on all of them.

Login and logout forms carry a form token bound to a cookie a page on another site can
neither read nor set: before login the pre-session cookie (``ninjahook_login``), after
it the session cookie. The post must also come from this origin (``Sec-Fetch-Site`` or
``Origin``, see :func:`app.web.dashboard.form_allowed`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.state import AppState
from app.storage import sessions as store

SESSION_COOKIE = "ninjahook_session"
LOGIN_COOKIE = "ninjahook_login"
# last_seen_at is written at most this often per session (seconds; less when the idle
# limit is short), so reading pages does not write on every request.
TOUCH_INTERVAL = 60.0

# The clock sessions are judged by; tests replace it.
clock: Callable[[], float] = time.time


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def new_random() -> str:
    """A fresh random value for a session id or a pre-session cookie."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SessionIdentity:
    """Who a live session is: the role of the token it logged in with (``read`` or
    ``operator``) and, for an operator, the token's label."""

    role: str
    actor: str | None


def start_session(state: AppState, role: str = "read", actor: str | None = None) -> str:
    """Store a new session and return its id (for the cookie); expired ones are purged."""
    session_id = new_random()
    now = clock()
    config = state.config
    expires_at = now + config.session_max if config.session_max else float("inf")
    with state.db.begin() as conn:
        store.delete_expired_sessions(conn, now, config.session_idle)
        store.insert_session(
            conn, _hash(session_id), now, min(expires_at, 1e18), role=role, actor=actor
        )
    return session_id


def session_valid(state: AppState, session_id: str) -> bool:
    """Whether ``session_id`` is a live session; records its use. A session found past
    a limit is deleted."""
    return session_identity(state, session_id) is not None


def session_identity(state: AppState, session_id: str) -> SessionIdentity | None:
    """Who the live session ``session_id`` is (None when it is not live); records its
    use. A session found past a limit is deleted."""
    if not session_id or len(session_id) > 200:
        return None
    id_hash = _hash(session_id)
    now = clock()
    idle = state.config.session_idle
    with state.db.connect() as conn:
        row = store.get_session(conn, id_hash)
    if row is None:
        return None
    if now >= row.expires_at or (idle and now - row.last_seen_at >= idle):
        with state.db.begin() as conn:
            store.delete_session(conn, id_hash)
        return None
    interval = min(TOUCH_INTERVAL, idle / 10) if idle else TOUCH_INTERVAL
    if now - row.last_seen_at >= interval:
        with state.db.begin() as conn:
            store.touch_session(conn, id_hash, now)
    return SessionIdentity(role=row.role or "read", actor=row.actor)


def end_session(state: AppState, session_id: str) -> bool:
    """Revoke a session (logout); True when there was one."""
    if not session_id:
        return False
    with state.db.begin() as conn:
        return store.delete_session(conn, _hash(session_id)) > 0
