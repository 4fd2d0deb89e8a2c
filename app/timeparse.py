"""Points in time as users write them: ISO 8601, epoch seconds, or an age such as ``6h``."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_instant(text: str, *, allow_age: bool = True, now: float | None = None) -> float:
    """Epoch seconds from ISO 8601 (naive means UTC), epoch seconds, or, when
    ``allow_age``, an age before ``now`` such as ``90m``, ``6h`` or ``2d``.

    :raises ValueError: whose message names the accepted forms and the value.
    """
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    if allow_age and value[-1:].lower() in _AGE_UNITS:
        try:
            amount = float(value[:-1])
        except ValueError:
            pass
        else:
            return (time.time() if now is None else now) - amount * _AGE_UNITS[value[-1].lower()]
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        forms = "ISO 8601 (2026-01-31T12:00:00Z), epoch seconds"
        forms += " or an age (30m, 6h, 2d)" if allow_age else ""
        raise ValueError(f"expected {forms}, got {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso(ts: float) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
