"""/metrics does not read the outbox's history: on 1,000,000 stored deliveries a scrape
reads pending and in-flight rows through the status index and the delivered and dead
counts from counters, and still exposes the right numbers.

The check is deterministic: every SELECT the scrape runs is explained (SQLite: EXPLAIN
QUERY PLAN; PostgreSQL: EXPLAIN ANALYZE), and none may scan the deliveries table or
read more than a bounded number of its rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from app.metrics.service import exposition
from app.notifications import reads
from app.storage import notifications as store
from app.storage.tables import deliveries

# Rows 1-500 pending, 501-600 in flight, 601-1000 dead, the rest delivered.
PENDING, DELIVERING, DEAD = 500, 100, 400

_STATUS = (
    f"CASE WHEN n <= {PENDING} THEN 'pending' "
    f"WHEN n <= {PENDING + DELIVERING} THEN 'delivering' "
    f"WHEN n <= {PENDING + DELIVERING + DEAD} THEN 'dead' ELSE 'delivered' END"
)
_COLUMNS = (
    "uid, activity_id, route, destination, kind, event, status, attempts, "
    "next_attempt_at, created_at, updated_at"
)


def fill_outbox(conn: Any, now: float, rows: int) -> None:
    """``rows`` deliveries to destination d (webhook) in one INSERT … SELECT."""
    values = (
        f"'u' || n, n, 'r', 'd', 'webhook', 'notify', {_STATUS}, 1, "
        f"{now - 60}, {now - 60} + n * 0.0001, {now - 60}"
    )
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"INSERT INTO deliveries ({_COLUMNS}) "
            f"SELECT {values} FROM generate_series(1, {rows}) AS n"
        )
        conn.exec_driver_sql("ANALYZE deliveries")
    else:
        conn.exec_driver_sql(
            f"INSERT INTO deliveries ({_COLUMNS}) "
            f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq "
            f"WHERE n < {rows}) SELECT {values} FROM seq"
        )
        conn.exec_driver_sql("ANALYZE")


@contextmanager
def recorded(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """(statement, parameters) of every statement ``engine`` runs inside the block."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _pg_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _pg_nodes(child)


def deliveries_rows_read(conn: Any, statement: str, parameters: Any) -> int:
    """How many rows of deliveries ``statement`` reads, by its plan; fails on a full scan."""
    if conn.dialect.name == "postgresql":
        plan = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
        ).scalar()
        plan = json.loads(plan) if isinstance(plan, str) else plan
        read = 0
        for node in _pg_nodes(plan[0]["Plan"]):
            if node.get("Relation Name") == "deliveries" or "deliveries" in str(
                node.get("Index Name", "")
            ):
                assert node["Node Type"] != "Seq Scan", (statement, node)
                loops = node.get("Actual Loops", 1)
                read += (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * loops
        return read
    lines = [
        str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
    ]
    for line in lines:
        # "SCAN deliveries" (the table, or a whole index) reads every row; only an
        # index SEARCH bounded by status is allowed.
        assert not line.startswith("SCAN deliveries"), (statement, lines)
    searched = [line for line in lines if line.startswith("SEARCH deliveries")]
    for line in searched:
        assert "(status=?)" in line, (statement, lines)
    # SQLite's plan does not count rows: an index search on the unfinished statuses
    # reads at most that many rows.
    return len(searched) * (PENDING + DELIVERING)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        if family.name.startswith(("ninjahook_deliveries", "ninjahook_delivery_"))
        for s in family.samples
    }


def by_status(status: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("ninjahook_deliveries", (("destination", "d"), ("kind", "webhook"), ("status", status)))


@pytest.mark.parametrize(
    "rows",
    [pytest.param(1_000_000, marks=pytest.mark.slow, id="1M"), pytest.param(20_000, id="20k")],
)
def test_a_scrape_reads_no_history_of_the_outbox(state: Any, rows: int) -> None:
    now = time.time()
    with state.db.begin() as conn:
        fill_outbox(conn, now, rows)
    exposition(state)  # counts the finished rows once (a database from before the counters)

    with recorded(state.db.engine) as statements:
        found = samples(exposition(state))
    assert found[by_status("pending")] == PENDING
    assert found[by_status("delivering")] == DELIVERING
    assert found[by_status("dead")] == DEAD
    assert found[by_status("delivered")] == rows - PENDING - DELIVERING - DEAD
    assert found[("ninjahook_delivery_queue_depth", ())] == PENDING + DELIVERING
    assert found[("ninjahook_delivery_oldest_pending_age_seconds", ())] >= 59

    on_outbox = [
        (sql, params)
        for sql, params in statements
        if sql.lstrip().upper().startswith("SELECT") and "deliveries" in sql
    ]
    assert on_outbox, statements
    with state.db.connect() as conn:
        read = sum(deliveries_rows_read(conn, sql, params) for sql, params in on_outbox)
    # Bounded by the backlog (600 rows, read by each of the few statements), not by
    # the rows stored.
    assert read <= 4 * (PENDING + DELIVERING), read


def test_the_finished_counts_follow_every_change(state: Any) -> None:
    """Counts kept in step by delivering, dying, re-queueing and retention, and a
    database's existing rows counted once."""
    now = time.time()
    with state.db.begin() as conn:
        for n in range(1, 6):
            store.enqueue(
                conn,
                activity_id=n,
                route="r",
                destination="d",
                kind="webhook",
                event="notify",
                alert_key=None,
                refers_to=None,
                now=now,
            )
        # Two rows finished before the counts existed (written directly).
        conn.execute(
            sa.update(deliveries).where(deliveries.c.activity_id <= 2).values(status="delivered")
        )

    def counts() -> dict[str, int]:
        return {c.status: c.count for c in reads.notification_metrics(state).counts}

    assert counts() == {"delivered": 2, "pending": 3}
    with state.db.begin() as conn:
        claimed = store.claim(conn, now=now, lease=60, holder="w", limit=3)
        assert len(claimed) == 3
        ids = sorted(row.id for row in claimed)
        assert store.mark_delivered(conn, ids[0], "w", now, 200)
        assert store.mark_failed(conn, ids[1], "w", now, error="x", status_code=500, retry_at=None)
        assert not store.mark_delivered(conn, ids[1], "w", now, 200)  # no longer in flight
    assert counts() == {"delivered": 3, "dead": 1, "delivering": 1}
    with state.db.begin() as conn:
        assert store.requeue(conn, store.NotificationFilter(statuses=("dead",)), now) == 1
    assert counts() == {"delivered": 3, "pending": 1, "delivering": 1}
    with state.db.begin() as conn:
        assert store.requeue(conn, store.NotificationFilter(), now) == 3
    assert counts() == {"pending": 4, "delivering": 1}
