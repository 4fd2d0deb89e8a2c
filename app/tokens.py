"""Tokens generated into the instance folder when none are configured."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.config import Config


def token_label(token: str) -> str:
    """The label of a token configured without one: a short hash, never the token."""
    return "token-" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:8]


def generate_token() -> str:
    """A new random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def instance_token(instance: Path, kind: str) -> str | None:
    """The token generated earlier into the instance folder (``webhook`` or ``api``), if any."""
    path = instance / f"{kind}-token"
    return path.read_text().strip() if path.exists() else None


def load_or_create_token(instance: Path, kind: str) -> tuple[str, bool]:
    """The instance folder's generated ``kind`` token (``webhook`` or ``api``); creates it
    on first use.

    :returns: the token and whether it was created just now.
    """
    path = instance / f"{kind}-token"
    instance.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path.read_text().strip(), False
    token = generate_token()
    # Create with owner-only permissions before writing the secret.
    with path.open("x") as fh:
        path.chmod(0o600)
        fh.write(token + "\n")
    return token, True


@dataclass(frozen=True)
class TokenNotice:
    """One token that the instance folder provides because none is configured."""

    kind: str  # "webhook" or "api"
    token: str
    path: Path
    created: bool
    env: str

    def lines(self) -> list[str]:
        """What to print: the token itself only on the start that created it."""
        if not self.created:
            return [f"Using the {self.kind} token in {self.path}."]
        label = "a webhook" if self.kind == "webhook" else "an API (read)"
        return [
            f"Generated {label} token (shown once; kept in {self.path}):",
            f"  {self.token}",
            f"  Set {self.env} to use your own.",
        ]


def ensure_tokens(config: Config) -> list[TokenNotice]:
    """Generate the webhook and read tokens into the instance folder when none are
    configured; what to tell the user about each (``ninjahook serve`` and gunicorn's
    start print them, so each generated token is shown once, when it is created)."""
    notices = []
    for kind, configured, env in (
        ("webhook", config.webhook_tokens, "NINJAHOOK_WEBHOOK_TOKENS"),
        ("api", config.api_tokens, "NINJAHOOK_API_TOKENS"),
    ):
        if configured:
            continue
        token, created = load_or_create_token(config.instance, kind)
        notices.append(TokenNotice(kind, token, config.instance / f"{kind}-token", created, env))
    return notices
