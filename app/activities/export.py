"""Exporting stored activities as JSON Lines or CSV, streamed in id-keyed batches.

``ninjahook export`` and ``GET /activities/export`` both call :func:`export_chunks`
(through :func:`stream` for HTTP). Memory stays flat however many activities match:

* the rows are read by keyset pagination, id ascending: one query lists the next
  :data:`BATCH_ROWS` ids with their body lengths (:func:`app.storage.activities.export_sizes`),
  and the rows are then read by id range in groups of at most :data:`BATCH_BYTES` of
  bodies (and at least one row), so a page of unusually large bodies never comes into
  memory at once (an activity stored meanwhile with an id inside a range comes along);
* each query takes a connection from the pool and gives it back before anything is
  yielded: no connection, transaction or snapshot is held while the consumer (a slow
  HTTP client, a pipe) is being written to. A consumer that stops (a client that went
  away, ``head``) simply closes the generator; ``stop`` lets a caller end it between
  batches without closing it.

Formats:

* ``jsonl``: one original payload per line, the stored raw body byte for byte, except
  that any CR or LF byte is written as a space. The stored body is strict JSON (ingest
  refuses anything else), where a CR or LF can only be whitespace between tokens (inside
  a string it must be escaped, and no UTF-8 multi-byte sequence contains those bytes),
  so every line is exactly the payload received: the same numbers as written (no float
  round trip), the same key order and escapes.
* ``csv``: a header row of the read API's column names (:data:`CSV_COLUMNS`), then one
  row per activity with the stored values: ``activityTime`` in epoch seconds as stored
  (as ``GET /activities`` shows it), ``receivedAt`` in ISO 8601 UTC, empty for NULL.
  Written with the csv module (quoting as needed; text is not altered, so a value that
  starts with ``=`` stays as it is: treat the file as data, not as a spreadsheet to trust).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import Any

from app.storage import activities as store
from app.storage.db import Database
from app.timeparse import iso

FORMATS: dict[str, str] = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
# Ids (with lengths) per keyset query.
BATCH_ROWS = 5000
# Raw body bytes read per row query (at least one row, however large).
BATCH_BYTES = 8 * 1024 * 1024
CSV_COLUMNS: tuple[str, ...] = tuple(store.ACTIVITY_COLUMNS)

_RECEIVED_AT = CSV_COLUMNS.index("receivedAt")
_NEWLINES = bytes.maketrans(b"\r\n", b"  ")


def jsonl_line(raw: bytes) -> bytes:
    """The stored body as one JSON Lines line: CR and LF (JSON whitespace) as spaces."""
    return bytes(raw).translate(_NEWLINES) + b"\n"


def _groups(sizes: list[tuple[int, int]], max_bytes: int) -> Iterator[list[int]]:
    """``sizes``' ids in order, in groups whose bodies add up to at most ``max_bytes``
    (a body larger than that is a group alone)."""
    group: list[int] = []
    total = 0
    for activity_id, size in sizes:
        if group and total + size > max_bytes:
            yield group
            group, total = [], 0
        group.append(activity_id)
        total += size
    if group:
        yield group


def export_chunks(
    db: Database,
    flt: store.ActivityFilter,
    fmt: str,
    *,
    stop: Callable[[], bool] = lambda: False,
    batch_rows: int | None = None,
    batch_bytes: int | None = None,
) -> Iterator[tuple[bytes, int]]:
    """The activities matching ``flt``, oldest id first, in ``fmt`` (a :data:`FORMATS`
    key), as ``(bytes, activities in them)`` chunks; the CSV header comes first, as a
    chunk of 0 activities. Ends early, between two queries, when ``stop()`` is true.
    ``batch_rows`` and ``batch_bytes`` default to :data:`BATCH_ROWS` and :data:`BATCH_BYTES`.

    :raises ValueError: an unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (expected one of {', '.join(FORMATS)})")
    jsonl = fmt == "jsonl"
    rows_per_page = BATCH_ROWS if batch_rows is None else batch_rows
    bytes_per_read = BATCH_BYTES if batch_bytes is None else batch_bytes
    if not jsonl:
        yield _csv_chunk([CSV_COLUMNS]), 0
    after: int | None = None
    while not stop():
        with db.connect() as conn:
            sizes = store.export_sizes(conn, flt, after_id=after, limit=rows_per_page)
        for ids in _groups(sizes, bytes_per_read):
            if stop():
                return
            with db.connect() as conn:
                rows = store.export_rows(conn, flt, ids[0], ids[-1], raw=jsonl)
            if jsonl:
                yield b"".join(jsonl_line(r.raw) for r in rows), len(rows)
            else:
                yield _csv_chunk(_csv_rows(rows)), len(rows)
            del rows
        if len(sizes) < rows_per_page:
            return
        after = sizes[-1][0]


def _csv_rows(rows: list[Any]) -> Iterator[list[Any]]:
    """Rows of :func:`app.storage.activities.export_rows` (columns in :data:`CSV_COLUMNS`
    order) as CSV values: ints and text as they are, floats as repr (the shortest exact
    form), receivedAt in ISO 8601; the csv module writes None as an empty cell."""
    for row in rows:
        values = list(row)
        values[_RECEIVED_AT] = iso(values[_RECEIVED_AT])
        yield values


def _csv_chunk(rows: Any) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8", "replace")


def stream(
    db: Database,
    flt: store.ActivityFilter,
    fmt: str,
    *,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[bytes]:
    """:func:`export_chunks` as bytes only, for a streamed HTTP answer."""
    for chunk, _count in export_chunks(db, flt, fmt, stop=stop):
        yield chunk
