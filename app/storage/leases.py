"""Leases that let one process among many (workers, hosts) run a periodic task."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.storage.tables import task_leases


def try_acquire_lease(conn: Connection, name: str, holder: str, now: float, ttl: float) -> bool:
    """Take or renew lease ``name`` for ``holder`` until ``now + ttl``; True when held."""
    t = task_leases.c
    renewed = conn.execute(
        sa.update(task_leases)
        .where(t.name == name, sa.or_(t.holder == holder, t.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
    )
    if renewed.rowcount:
        return True
    exists = conn.execute(sa.select(t.holder).where(t.name == name)).first()
    if exists is not None:
        return False
    try:
        with conn.begin_nested():
            conn.execute(
                sa.insert(task_leases).values(name=name, holder=holder, expires_at=now + ttl)
            )
    except sa.exc.IntegrityError:
        return False
    return True


def release_lease(conn: Connection, name: str, holder: str) -> None:
    """Give up lease ``name`` if ``holder`` has it."""
    t = task_leases.c
    conn.execute(
        sa.update(task_leases).where(t.name == name, t.holder == holder).values(expires_at=0.0)
    )


def last_run(conn: Connection, name: str) -> float | None:
    """When task ``name`` last completed, by any process."""
    return conn.execute(
        sa.select(task_leases.c.last_run_at).where(task_leases.c.name == name)
    ).scalar()


def mark_run(conn: Connection, name: str, now: float) -> None:
    """Record that task ``name`` completed at ``now``."""
    conn.execute(sa.update(task_leases).where(task_leases.c.name == name).values(last_run_at=now))
