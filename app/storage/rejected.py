"""Queries that keep rejected deliveries within their caps, and read them in previews.

The totals the caps are checked against are kept as running counts in two rows of
``metric_counters`` (:data:`KEPT_ROWS`, :data:`KEPT_BYTES`): each kept delivery adds to
them and each trim subtracts, in the same transaction. Summing the bodies' lengths
instead reads every row's page (tens of ms at 10,000 rows, under the writer lock).
Something else that deletes rows (retention) leaves the row count behind, which the
indexed ``count(*)`` shows: then, and only then, the totals are recomputed exactly.
On PostgreSQL, the first counter update locks its row until the commit, so concurrent
keepers take turns and each sees the others' rows.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from app.storage.activities import dialect_insert
from app.storage.metrics import add_to_counter
from app.storage.tables import metric_counters, rejected_deliveries

# Rows (name, labels) of metric_counters. DROPPED_COUNTER counts rejected deliveries
# dropped to keep within the caps (app.metrics.service reads counters from that table);
# KEPT_ROWS and KEPT_BYTES are the running totals of what is kept.
DROPPED_COUNTER = "rejected_dropped"
KEPT_ROWS = "rejected_kept_rows"
KEPT_BYTES = "rejected_kept_bytes"
NO_LABELS = "{}"

_BODY_BYTES = sa.func.length(rejected_deliveries.c.body)


def totals(conn: Connection) -> tuple[int, int]:
    """(rows, bytes of the stored bodies) of the rejected deliveries kept, counted exactly
    (reads every row)."""
    count, size = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(_BODY_BYTES), 0))
    ).one()
    return int(count), int(size)


def count_rows(conn: Connection) -> int:
    """How many rejected deliveries are kept (from an index)."""
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(rejected_deliveries)).scalar() or 0
    )


def _counter(conn: Connection, name: str) -> int | None:
    value = conn.execute(
        sa.select(metric_counters.c.value).where(
            metric_counters.c.name == name, metric_counters.c.labels == NO_LABELS
        )
    ).scalar()
    return None if value is None else int(value)


def _set_counter(conn: Connection, name: str, value: int) -> None:
    stmt = dialect_insert(conn, metric_counters).values(name=name, labels=NO_LABELS, value=value)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[metric_counters.c.name, metric_counters.c.labels],
            set_={"value": stmt.excluded.value},
        )
    )


def note_kept(conn: Connection, body_bytes: int) -> None:
    """Count one more kept delivery of ``body_bytes`` (in the transaction that keeps it)."""
    add_to_counter(conn, KEPT_ROWS, NO_LABELS, 1)
    add_to_counter(conn, KEPT_BYTES, NO_LABELS, body_bytes)


def kept_totals(conn: Connection) -> tuple[int, int]:
    """(rows, bytes of bodies) kept: the running totals, recomputed exactly when the row
    count shows that rows were deleted (or kept) without them."""
    rows, size = _counter(conn, KEPT_ROWS), _counter(conn, KEPT_BYTES)
    if rows is None or size is None or rows != count_rows(conn):
        rows, size = totals(conn)
        _set_counter(conn, KEPT_ROWS, rows)
        _set_counter(conn, KEPT_BYTES, size)
    return rows, size


def trim_batch(conn: Connection, *, max_rows: int, max_bytes: int, batch: int) -> int:
    """Delete the oldest rejected deliveries, up to ``batch`` of them, until at most
    ``max_rows`` rows and ``max_bytes`` bytes of bodies are kept; returns how many went.

    Only the ids and sizes of the oldest ``batch`` rows are read. The caller repeats
    while a call deletes a full batch (after the caps were lowered, say).
    """
    rows, size = kept_totals(conn)
    if rows <= max_rows and size <= max_bytes:
        return 0
    oldest = conn.execute(
        sa.select(rejected_deliveries.c.id, _BODY_BYTES)
        .order_by(rejected_deliveries.c.id)
        .limit(batch)
    ).all()
    last_id = None
    dropped = dropped_bytes = 0
    for row_id, row_bytes in oldest:
        if rows - dropped <= max_rows and size - dropped_bytes <= max_bytes:
            break
        last_id = row_id
        dropped += 1
        dropped_bytes += int(row_bytes or 0)
    if last_id is None:
        return 0
    conn.execute(sa.delete(rejected_deliveries).where(rejected_deliveries.c.id <= last_id))
    add_to_counter(conn, KEPT_ROWS, NO_LABELS, -dropped)
    add_to_counter(conn, KEPT_BYTES, NO_LABELS, -dropped_bytes)
    add_to_counter(conn, DROPPED_COUNTER, NO_LABELS, dropped)
    return dropped


def dropped_count(conn: Connection) -> int:
    """How many rejected deliveries have been dropped to keep within the caps."""
    value = conn.execute(
        sa.select(metric_counters.c.value).where(
            metric_counters.c.name == DROPPED_COUNTER, metric_counters.c.labels == NO_LABELS
        )
    ).scalar()
    return int(value or 0)


def _columns(preview: int | None) -> list[sa.ColumnElement[Any]]:
    """Every column; with ``preview``, the body's first ``preview + 1`` bytes only (one
    more than shown, so that the reader can tell a cut body)."""
    table = rejected_deliveries
    body: sa.ColumnElement[Any] = table.c.body
    if preview is not None:
        body = sa.func.substr(table.c.body, 1, preview + 1, type_=sa.LargeBinary).label("body")
    return [c if c.name != "body" else body for c in table.c]


def list_rejected(
    conn: Connection, *, limit: int, before_id: int | None = None, preview: int | None = None
) -> list[Row[Any]]:
    """Rejected deliveries, newest first; with ``preview``, each body cut in SQL to
    ``preview + 1`` bytes (see :func:`_columns`)."""
    stmt = sa.select(*_columns(preview))
    if before_id is not None:
        stmt = stmt.where(rejected_deliveries.c.id < before_id)
    return list(conn.execute(stmt.order_by(rejected_deliveries.c.id.desc()).limit(limit)))


def get_rejected(conn: Connection, rejected_id: int) -> Row[Any] | None:
    """One rejected delivery with its whole stored body, or None."""
    return conn.execute(
        sa.select(rejected_deliveries).where(rejected_deliveries.c.id == rejected_id)
    ).first()
