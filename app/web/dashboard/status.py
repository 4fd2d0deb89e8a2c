"""The dashboard's status panel: ``ninjahook status`` without the call to NinjaOne
(the page must not wait on NinjaOne; the last backfill says whether its API worked)."""

from __future__ import annotations

from app.state import AppState
from app.status.service import Report, status_report


def status_panel(state: AppState) -> Report:
    """The report the panel (templates/_status.html) shows."""
    return status_report(state, probe_api=False)
