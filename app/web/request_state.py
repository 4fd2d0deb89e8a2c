"""The per-request state that middleware, validators, handlers and error handlers share."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from app.ingest.rejected import Rejection
from app.state import AppState

SCOPE_KEY = "ninjahook"


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


def request_state(scope: MutableMapping[str, Any]) -> RequestState:
    """The :class:`RequestState` of the request that ``scope`` belongs to."""
    state: RequestState = scope[SCOPE_KEY]
    return state
