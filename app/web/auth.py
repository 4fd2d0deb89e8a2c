"""Token checks for the security schemes in webhook.yaml.

Connexion calls these by the names in ``x-bearerInfoFunc`` / ``x-apikeyInfoFunc``.
Webhook tokens, read tokens and operator tokens are separate sets, so a webhook token
cannot read and a read token cannot ingest or act. An operator token reads too, and
its token_info's ``sub`` is the token's label (who operator actions are recorded
under). Every comparison is constant-time and looks at every configured token.
"""

from __future__ import annotations

import hmac
from typing import Any

from app.web.request_state import request_state
from app.web.sessions import SESSION_COOKIE, session_identity

__all__ = ["SESSION_COOKIE"]


def token_matches(candidate: str, tokens: tuple[str, ...]) -> bool:
    """True when ``candidate`` equals one of ``tokens``, in time independent of which."""
    given = candidate.encode("utf-8", "surrogateescape")
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token.encode("utf-8"))
    return matched


def operator_label(candidate: str, tokens: tuple[tuple[str, str], ...]) -> str | None:
    """The label of the operator token ``candidate`` is (None when it is none), in time
    independent of which."""
    given = candidate.encode("utf-8", "surrogateescape")
    found = None
    for label, token in tokens:
        if hmac.compare_digest(given, token.encode("utf-8")):
            found = label
    return found


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
    """``Authorization: Bearer`` with a read token (or an operator token)."""
    config = request_state(request.scope).app.config
    if token_matches(token, config.api_tokens):
        return {"sub": "reader", "scope": "read"}
    return operator_bearer(token, request)


def api_cookie(value: str, request: Any) -> dict[str, Any] | None:
    """The dashboard session cookie: a live session from :mod:`app.web.sessions`."""
    identity = session_identity(request_state(request.scope).app, value)
    if identity is None:
        return None
    if identity.role == "operator" and identity.actor:
        return {"sub": identity.actor, "scope": "operator"}
    return {"sub": "dashboard", "scope": "read"}


def operator_bearer(token: str, request: Any) -> dict[str, Any] | None:
    """``Authorization: Bearer`` with an operator token; ``sub`` is its label."""
    label = operator_label(token, request_state(request.scope).app.config.operator_tokens)
    return {"sub": label, "scope": "operator"} if label is not None else None


def operator_cookie(value: str, request: Any) -> dict[str, Any] | None:
    """The session cookie of a dashboard session logged in with an operator token."""
    info = api_cookie(value, request)
    return info if info is not None and info["scope"] == "operator" else None
