"""Token checks for the security schemes in webhook.yaml.

Connexion calls these by the names in ``x-bearerInfoFunc`` / ``x-apikeyInfoFunc``.
Webhook tokens and read tokens are separate sets, so a webhook token cannot read
and a read token cannot ingest. Every comparison is constant-time and looks at
every configured token.
"""

from __future__ import annotations

import hmac
from typing import Any

from app.web.request_state import request_state
from app.web.sessions import SESSION_COOKIE, session_valid

__all__ = ["SESSION_COOKIE"]


def token_matches(candidate: str, tokens: tuple[str, ...]) -> bool:
    """True when ``candidate`` equals one of ``tokens``, in time independent of which."""
    given = candidate.encode("utf-8", "surrogateescape")
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token.encode("utf-8"))
    return matched


def _webhook(token: str, request: Any) -> dict[str, Any] | None:
    tokens = request_state(request.scope).app.config.webhook_tokens
    return {"sub": "ninjaone", "scope": "ingest"} if token_matches(token, tokens) else None


def webhook_bearer(token: str, request: Any) -> dict[str, Any] | None:
    """``Authorization: Bearer`` with a webhook token."""
    return _webhook(token, request)


def webhook_query_token(token: str, request: Any) -> dict[str, Any] | None:
    """``?token=`` with a webhook token (notification channels cannot set headers)."""
    return _webhook(token, request)


def api_bearer(token: str, request: Any) -> dict[str, Any] | None:
    """``Authorization: Bearer`` with a read token."""
    tokens = request_state(request.scope).app.config.api_tokens
    return {"sub": "reader", "scope": "read"} if token_matches(token, tokens) else None


def api_cookie(value: str, request: Any) -> dict[str, Any] | None:
    """The dashboard session cookie: a live session from :mod:`app.web.sessions`."""
    state = request_state(request.scope).app
    return {"sub": "dashboard", "scope": "read"} if session_valid(state, value) else None
