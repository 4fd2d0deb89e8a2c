"""Flapping conditions: firings counted from the stored activities, and the conditions a
route found flapping (``flapping_conditions``, migration 0010).

A condition is a device and a condition's sourceConfigUid (across its alert keys: every
TRIGGERED/RESET cycle of a flapping check opens a new alert). A firing is a stored
TRIGGERED activity of the condition.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from app.storage.activities import dialect_insert
from app.storage.tables import activities, alerts, devices, flapping_conditions

TRIGGERED = "TRIGGERED"


def count_firings(
    conn: Connection, device_id: int, source_config_uid: str, since: float, until: float
) -> int:
    """How many TRIGGERED activities of the condition arrived in (``since``, ``until``]
    (through the index on device_id)."""
    c = activities.c
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(
                c.device_id == device_id,
                c.source_config_uid == source_config_uid,
                c.status_code == TRIGGERED,
                c.received_at > since,
                c.received_at <= until,
            )
        ).scalar()
        or 0
    )


def flapping_state(
    conn: Connection, route: str, device_id: int, source_config_uid: str
) -> Row[Any] | None:
    """The route's record of the condition flapping, or None when it is not."""
    f = flapping_conditions.c
    return conn.execute(
        sa.select(flapping_conditions).where(
            f.route == route, f.device_id == device_id, f.source_config_uid == source_config_uid
        )
    ).first()


def mark_flapping(
    conn: Connection,
    route: str,
    device_id: int,
    source_config_uid: str,
    *,
    activity_id: int,
    firings: int,
    now: float,
    quiet_until: float,
) -> bool:
    """Record that the condition flaps for ``route``, marked by ``activity_id``; False
    when it was marked already (another worker, or another destination, came first)."""
    inserted = conn.execute(
        dialect_insert(conn, flapping_conditions)
        .values(
            route=route,
            device_id=device_id,
            source_config_uid=source_config_uid,
            flapping_since=now,
            marked_activity_id=activity_id,
            quiet_until=quiet_until,
            firings=firings,
        )
        .on_conflict_do_nothing()
        .returning(flapping_conditions.c.route)
    ).first()
    return inserted is not None


def keep_quiet(
    conn: Connection, route: str, device_id: int, source_config_uid: str, quiet_until: float
) -> None:
    """Count one more quiet firing and push the end of the quiet on to ``quiet_until``."""
    f = flapping_conditions.c
    greatest = sa.func.max if conn.dialect.name == "sqlite" else sa.func.greatest
    conn.execute(
        sa.update(flapping_conditions)
        .where(f.route == route, f.device_id == device_id, f.source_config_uid == source_config_uid)
        .values(firings=f.firings + 1, quiet_until=greatest(f.quiet_until, quiet_until))
    )


def end_flapping(
    conn: Connection, route: str, device_id: int, source_config_uid: str, calm_since: float
) -> bool:
    """Forget the route's record of the condition when it has been calm (its quiet ended
    at or before ``calm_since``); True when it did."""
    f = flapping_conditions.c
    ended = conn.execute(
        sa.delete(flapping_conditions).where(
            f.route == route,
            f.device_id == device_id,
            f.source_config_uid == source_config_uid,
            f.quiet_until <= calm_since,
        )
    )
    return bool(ended.rowcount)


def flapping_now(conn: Connection, now: float, limit: int = 50) -> list[Any]:
    """Conditions flapping now (their quiet not over), one row per condition: device_id,
    source_config_uid, flapping_since (earliest), quiet_until (latest), firings (most)."""
    f = flapping_conditions.c
    return list(
        conn.execute(
            sa.select(
                f.device_id,
                f.source_config_uid,
                sa.func.min(f.flapping_since).label("flapping_since"),
                sa.func.max(f.quiet_until).label("quiet_until"),
                sa.func.max(f.firings).label("firings"),
            )
            .where(f.quiet_until > now)
            .group_by(f.device_id, f.source_config_uid)
            .order_by(sa.func.min(f.flapping_since).desc())
            .limit(limit)
        ).all()
    )


def alert_flapping(conn: Connection, key: str, now: float) -> Any:
    """Whether the alert's condition (the device and sourceConfigUid of its last activity)
    flaps now: (flapping_since, quiet_until), or None."""
    f, a, act = flapping_conditions.c, alerts.c, activities.c
    return conn.execute(
        sa.select(
            sa.func.min(f.flapping_since).label("flapping_since"),
            sa.func.max(f.quiet_until).label("quiet_until"),
        )
        .select_from(
            alerts.join(activities, act.id == a.last_activity_id).join(
                flapping_conditions,
                sa.and_(
                    f.device_id == act.device_id,
                    f.source_config_uid == act.source_config_uid,
                ),
            )
        )
        .where(a.key == key, f.quiet_until > now)
        .having(sa.func.count() > 0)
    ).first()


def noisiest_conditions(conn: Connection, since: float, limit: int = 10) -> list[Row[Any]]:
    """The conditions that fired most since ``since`` (by activityTime, through its
    index): device_id, device_name (cached), source_config_uid, source_name, firings."""
    c = activities.c
    device_name = (
        sa.select(devices.c.display_name)
        .where(devices.c.id == c.device_id)
        .correlate(activities)
        .scalar_subquery()
    )
    return list(
        conn.execute(
            sa.select(
                c.device_id,
                device_name.label("device_name"),
                c.source_config_uid,
                sa.func.max(c.source_name).label("source_name"),
                sa.func.count().label("firings"),
            )
            .where(
                c.activity_time >= since,
                c.status_code == TRIGGERED,
                c.device_id.is_not(None),
                c.source_config_uid.is_not(None),
            )
            .group_by(c.device_id, c.source_config_uid)
            .order_by(sa.func.count().desc(), c.device_id)
            .limit(limit)
        ).all()
    )


def flapping_keys(conn: Connection, keys: list[str], now: float) -> set[str]:
    """Which of the alerts ``keys`` belong to a condition that flaps now."""
    if not keys:
        return set()
    f, a, act = flapping_conditions.c, alerts.c, activities.c
    return {
        str(k)
        for k in conn.execute(
            sa.select(a.key)
            .distinct()
            .select_from(
                alerts.join(activities, act.id == a.last_activity_id).join(
                    flapping_conditions,
                    sa.and_(
                        f.device_id == act.device_id,
                        f.source_config_uid == act.source_config_uid,
                    ),
                )
            )
            .where(a.key.in_(keys), f.quiet_until > now)
        ).scalars()
    }
