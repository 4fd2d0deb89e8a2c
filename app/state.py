"""The per-application state that create_app builds and requests reach."""

from __future__ import annotations

import threading
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from app.config import Config
from app.storage.db import Database

# Called inside the ingest transaction for each newly stored activity, so that what it
# writes (entity cache, alerts, outbox) commits or rolls back with the activity itself.
NewActivityHook = Callable[[Connection, dict[str, Any], "StoredActivity"], None]

SCOPE_KEY = "ninjahook"


@dataclass(frozen=True)
class StoredActivity:
    """The columns ingest derived from a payload."""

    id: int
    source: str
    received_at: float
    row: dict[str, Any]


@dataclass
class AppState:
    """Everything a request needs: the config, the database and the ingest hooks."""

    config: Config
    db: Database
    new_activity_hooks: list[NewActivityHook] = field(default_factory=list)
    # Unknown enum values already logged by this process (logging only; counts are in the DB).
    drift_logged: set[tuple[str, str]] = field(default_factory=set)
    drift_lock: threading.Lock = field(default_factory=threading.Lock)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestState:
    """Per-request data shared between middleware, validators, handlers and error handlers.

    The ASGI scope is copied on its way through Connexion's middleware, so this one
    mutable object, put in the scope first, is what every layer sees.
    """

    app: AppState
    raw_body: bytes | None = None
    payload: dict[str, Any] | None = None
    rejection: Rejection | None = None
    # Set by the ingest handler: whether the delivery was a redelivery (for the metrics).
    duplicate: bool | None = None


@dataclass(frozen=True)
class Rejection:
    """Why an authenticated delivery failed validation, with what was received."""

    reason: str
    field: str | None
    body: bytes
    body_bytes: int
    truncated: bool
    content_type: str | None


def request_state(scope: MutableMapping[str, Any]) -> RequestState:
    """The :class:`RequestState` of the request that ``scope`` belongs to."""
    state: RequestState = scope[SCOPE_KEY]
    return state
