"""Extension module (see app.factory.EXTENSIONS); not implemented yet."""

from __future__ import annotations

from app.background import PeriodicTask
from app.state import AppState


def install(state: AppState) -> list[PeriodicTask]:
    """Register ingest hooks on ``state``; return the periodic tasks this module needs."""
    return []


CONDITION_TYPES_PREFIX = "CONDITION"


def alert_key(payload: dict[str, object]) -> str | None:
    """The key of the alert a CONDITION activity belongs to, or None for other activities.

    The seriesUid (which equals NinjaOne's alert uid) when present, otherwise
    ``<deviceId>:<sourceConfigUid>``.
    """
    activity_type = payload.get("activityType")
    if not isinstance(activity_type, str) or not activity_type.startswith(CONDITION_TYPES_PREFIX):
        return None
    series = payload.get("seriesUid")
    if isinstance(series, str) and series:
        return series
    device, source = payload.get("deviceId"), payload.get("sourceConfigUid")
    if device is None or not source:
        return None
    return f"{device}:{source}"
