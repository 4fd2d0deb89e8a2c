"""What ``ninjahook status`` reads and records: marks in ``ninjaone_checkpoints`` and a
few bounded queries.

A *mark* is a named whole number with the time it was set (the checkpoint table's
``value`` and ``updated_at``). Unlike a checkpoint, which only moves forward, a mark is
overwritten: the last backfill's outcome, when ``configure`` last set the webhook, the
last full entity sync and its counts. Marks share the checkpoint table under the
``status.`` prefix, so no migration was needed; they hold numbers only, never text.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.storage.activities import dialect_insert
from app.storage.tables import (
    activities,
    devices,
    locations,
    ninjaone_checkpoints,
    organizations,
    rejected_deliveries,
)

PREFIX = "status."
# The last webhook delivery is looked for among this many newest activity ids (by the
# primary key's index): NinjaOne's ids grow, so a delivery is among the newest unless
# backfill stored more than this many activities after it.
RECENT_IDS = 1000


def set_marks(conn: Connection, group: str, values: Mapping[str, int], now: float) -> None:
    """Overwrite the marks ``status.<group>.<key>`` with ``values``, all set at ``now``."""
    for key, value in values.items():
        name = f"{PREFIX}{group}.{key}"
        stmt = dialect_insert(conn, ninjaone_checkpoints).values(
            name=name, value=int(value), updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[ninjaone_checkpoints.c.name],
            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        )
        conn.execute(stmt)


def get_marks(conn: Connection, group: str) -> dict[str, tuple[int, float]]:
    """The marks of ``group`` by key: (value, when it was set)."""
    prefix = f"{PREFIX}{group}."
    rows = conn.execute(
        sa.select(
            ninjaone_checkpoints.c.name,
            ninjaone_checkpoints.c.value,
            ninjaone_checkpoints.c.updated_at,
        ).where(ninjaone_checkpoints.c.name.startswith(prefix, autoescape=True))
    )
    return {r.name[len(prefix) :]: (int(r.value), float(r.updated_at)) for r in rows}


def checkpoint_updated(conn: Connection, name: str) -> tuple[int, float] | None:
    """A checkpoint's value and when it last moved, or None when it was never set."""
    row = conn.execute(
        sa.select(ninjaone_checkpoints.c.value, ninjaone_checkpoints.c.updated_at).where(
            ninjaone_checkpoints.c.name == name
        )
    ).first()
    return None if row is None else (int(row.value), float(row.updated_at))


def last_received(conn: Connection, source: str = "webhook") -> float | None:
    """When the newest stored activity from ``source`` arrived, among the
    :data:`RECENT_IDS` newest ids (bounded: activities have no index on arrival time)."""
    newest = (
        sa.select(activities.c.received_at, activities.c.source)
        .order_by(activities.c.id.desc())
        .limit(RECENT_IDS)
        .subquery()
    )
    value = conn.execute(
        sa.select(sa.func.max(newest.c.received_at)).where(newest.c.source == source)
    ).scalar()
    return None if value is None else float(value)


def newest_rejected_at(conn: Connection) -> float | None:
    """When the newest kept rejected delivery arrived (from its index)."""
    value = conn.execute(sa.select(sa.func.max(rejected_deliveries.c.received_at))).scalar()
    return None if value is None else float(value)


def entity_counts(conn: Connection) -> dict[str, int]:
    """How many organizations, locations and devices the cache holds."""
    return {
        kind: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)
        for kind, table in (
            ("organizations", organizations),
            ("locations", locations),
            ("devices", devices),
        )
    }
