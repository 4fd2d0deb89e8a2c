"""Handlers for metrics: generated stubs until implemented."""

from __future__ import annotations

from typing import Any


def get_metrics(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], int]:
    """Not implemented yet: generated from webhook.yaml (handlers.metrics.get_metrics)."""
    detail = "handlers.metrics.get_metrics is described in webhook.yaml but has no handler yet."
    return {"title": "Not Implemented", "status": 501, "detail": detail}, 501
