"""Handlers for deliveries from NinjaOne."""

from __future__ import annotations

from typing import Any

from app.ingest import ingest_activity
from app.web import JSON, current_request


def receive_activity() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Store the activity the body validator parsed; 200 whether new or a redelivery."""
    req = current_request()
    assert req.raw_body is not None and req.payload is not None
    result = ingest_activity(req.app, req.raw_body, req.payload, source="webhook")
    return {"id": result.id, "duplicate": result.duplicate}, 200, JSON
