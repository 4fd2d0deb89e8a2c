"""Tokens generated into the instance folder when none are configured."""

from __future__ import annotations

import secrets
from pathlib import Path


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
