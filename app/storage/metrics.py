"""Queries behind /metrics: shared counters, spec drift and open alerts."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.storage.activities import dialect_insert
from app.storage.alerts import open_alerts_by_severity
from app.storage.tables import metric_counters, spec_drift

__all__ = ["add_to_counter", "counters", "open_alerts_by_severity", "spec_drift_counts"]


def add_to_counter(conn: Connection, name: str, labels: str, amount: float) -> None:
    """Add ``amount`` to one counter row (created at ``amount`` when new)."""
    stmt = dialect_insert(conn, metric_counters).values(name=name, labels=labels, value=amount)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[metric_counters.c.name, metric_counters.c.labels],
            set_={"value": metric_counters.c.value + amount},
        )
    )


def counters(conn: Connection) -> list[tuple[str, str, float]]:
    """Every counter row: (name, labels as JSON, value)."""
    rows = conn.execute(
        sa.select(metric_counters.c.name, metric_counters.c.labels, metric_counters.c.value)
    )
    return [(r.name, r.labels, float(r.value)) for r in rows]


def spec_drift_counts(conn: Connection) -> list[tuple[str, str, int]]:
    """(field, value, count) of every unknown enum value seen."""
    rows = conn.execute(sa.select(spec_drift.c.field, spec_drift.c.value, spec_drift.c.count))
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]
