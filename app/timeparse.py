"""Points in time as users write them: ISO 8601, epoch seconds, or an age such as ``6h``."""

from __future__ import annotations

import math
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


# 10000-01-01T00:00:00Z: ISO 8601 (and Python's datetime) end with year 9999.
TIME_LIMIT = 253402300800.0


def is_time(ts: float) -> bool:
    """Whether epoch seconds ``ts`` is a time this receiver shows as one: finite, not
    negative, and before year 10000. Anything else a sender may send is stored and shown
    as the number it is."""
    return isinstance(ts, int | float) and math.isfinite(ts) and 0 <= ts < TIME_LIMIT


def raw_number(ts: float) -> str:
    """A number that is no time, as text (``1e+308``, ``-5.0``, ``inf``)."""
    return repr(ts)


def iso(ts: float) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp; total: a value that is no time
    (:func:`is_time`) comes back as the number itself (:func:`raw_number`), never an error.
    """
    if not is_time(ts):
        return raw_number(ts)
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
