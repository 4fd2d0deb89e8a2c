"""Pages of records with an opaque cursor, as the read API and the dashboard serve them.

:func:`decode_cursor`'s counterpart lives in :mod:`app.web.context`, where a bad
cursor becomes a 400.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any


def encode_cursor(last_id: int) -> str:
    """An opaque cursor for the page after ``last_id``."""
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def page_of(
    rows: Sequence[Any], limit: int, record: Callable[[Any], dict[str, Any]], key: str
) -> dict[str, Any]:
    """A page answer from up to ``limit + 1`` rows: ``limit`` records and, when there
    was one more row, the cursor after the last record's ``key``."""
    items = [record(r) for r in rows[:limit]]
    more = len(rows) > limit
    return {"items": items, "nextCursor": encode_cursor(items[-1][key]) if more else None}
