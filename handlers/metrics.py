"""Handler for /metrics (Prometheus text format)."""

from __future__ import annotations

from typing import Any

from connexion import context, problem
from flask import Response

from app.metrics import service as metrics
from app.web.context import app_state


def get_metrics() -> Any:
    """Every metric; 401 without a read token unless NINJAHOOK_METRICS_PUBLIC=1."""
    state = app_state()
    # The anonymous `{}` alternative in webhook.yaml yields empty token_info.
    if not context.context.get("token_info") and not state.config.metrics_public:
        return problem(
            401,
            "Unauthorized",
            "a read token is required (or set NINJAHOOK_METRICS_PUBLIC=1)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(metrics.exposition(state), status=200, content_type=metrics.CONTENT_TYPE)
