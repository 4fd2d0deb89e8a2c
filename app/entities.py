"""Extension module (see app.factory.EXTENSIONS); not implemented yet."""

from __future__ import annotations

from app.background import PeriodicTask
from app.state import AppState


def install(state: AppState) -> list[PeriodicTask]:
    """Register ingest hooks on ``state``; return the periodic tasks this module needs."""
    return []
