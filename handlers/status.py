"""GET /status: the report ``ninjahook status`` prints."""

from __future__ import annotations

from typing import Any

from app.status.service import status_report
from app.web.context import JSON, app_state


def get_status() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Green, amber or red per check, with the reason."""
    return status_report(app_state()).as_json(), 200, JSON
