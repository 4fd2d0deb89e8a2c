"""Text a delivery carries, made storable on every backend.

The raw body is stored as bytes, exactly as received. What is derived from it (the
activity's columns, the entity cache, alert keys, outbox rows) follows these rules:

* a NUL (``\\u0000``, which PostgreSQL text cannot hold) and a lone surrogate
  (``\\ud800``, which is not encodable as UTF-8) become U+FFFD;
* a value longer than a column's limit (:data:`SERIES_UID_LIMIT`,
  :data:`INDEXED_TEXT_LIMIT`) keeps its first characters and ends in ``~`` and 16 hex
  digits of the SHA-256 of the whole value, so distinct long values stay distinct and
  the same value always gives the same result (:func:`bounded`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

REPLACEMENT = "\ufffd"
# seriesUid is also an alert's key: alerts.key, alert_activities.alert_key and
# delivery_alerts.alert_key are String(300).
SERIES_UID_LIMIT = 300
# activityType and sourceName are btree-indexed on PostgreSQL (with the id), whose index
# rows are limited to 2704 bytes: 500 characters are at most 2000 bytes of UTF-8.
INDEXED_TEXT_LIMIT = 500
_HASH_DIGITS = 16

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The JSON escapes that can put a NUL or a lone surrogate into a parsed string (a raw NUL
# or an encoded surrogate is not valid JSON, or not valid UTF-8, to begin with).
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def clean(value: str) -> str:
    """``value`` with every NUL and lone surrogate replaced by U+FFFD."""
    if "\x00" not in value and value.isascii():
        return value
    return _UNSTORABLE.sub(REPLACEMENT, value)


def text(value: Any) -> str | None:
    """A string ``value`` made storable (:func:`clean`); None for anything else."""
    return clean(value) if isinstance(value, str) else None


def bounded(value: str, limit: int) -> str:
    """``value`` cleaned and, when longer than ``limit`` characters, cut to ``limit``:
    its start, ``~`` and 16 hex digits of its SHA-256. A result is its own result."""
    value = clean(value)
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:_HASH_DIGITS]
    return f"{value[: limit - _HASH_DIGITS - 1]}~{digest}"


def bounded_text(value: Any, limit: int) -> str | None:
    """:func:`bounded` for a string ``value``; None for anything else."""
    return bounded(value, limit) if isinstance(value, str) else None


def may_hold_unstorable(raw: bytes) -> bool:
    """Whether the JSON ``raw`` may parse into a string with a NUL or a lone surrogate
    (cheap; a false positive only costs a :func:`clean_payload`)."""
    return b"\\u" in raw and _UNSTORABLE_ESCAPE.search(raw) is not None


def clean_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``payload`` whose strings (keys too) are all :func:`clean`. Iterative, so
    nesting depth costs no stack."""
    result: dict[str, Any] = {}
    stack: list[tuple[Any, Any]] = [(payload, result)]
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, value in items:
            if isinstance(value, dict):
                copied: Any = {}
                stack.append((value, copied))
            elif isinstance(value, list):
                copied = [None] * len(value)
                stack.append((value, copied))
            elif isinstance(value, str):
                copied = clean(value)
            else:
                copied = value
            if isinstance(key, str):
                target[clean(key)] = copied
            else:
                target[key] = copied
    return result
