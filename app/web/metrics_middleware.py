"""Counting deliveries at the edge, including the answers no handler makes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics.service import buffer_for, record_ingest
from app.ninjaone.webhook_config import INGEST_PATH
from app.state import AppState
from app.web.request_state import SCOPE_KEY, RequestState


def _outcome(status: int, duplicate: bool | None) -> str:
    if status == 200:
        return "duplicate" if duplicate else "new"
    if status in (401, 403):
        return "unauthorized"
    if 400 <= status < 500:
        return "rejected"
    return "error"


class IngestMetricsMiddleware:
    """Counts every delivery by outcome and times it, including answers no handler makes
    (401 from the security layer, 400/413/415 from validation)."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._flushing_on_shutdown(receive), send)
            return
        if scope["type"] != "http" or scope["path"] != INGEST_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            request: RequestState | None = scope.get(SCOPE_KEY)
            payload: dict[str, Any] = (request.payload if request else None) or {}
            activity_type = payload.get("activityType")
            record_ingest(
                self.state,
                activity_type if isinstance(activity_type, str) else None,
                _outcome(status, request.duplicate if request else None),
                time.perf_counter() - started,
            )

    def _flushing_on_shutdown(self, receive: Receive) -> Receive:
        """``receive`` that stores this process's pending counts when shutdown begins,
        before the app closes its database (a graceful restart loses nothing)."""

        async def wrapped() -> Message:
            message: Message = await receive()
            if message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(buffer_for(self.state).flush_quietly)
            return message

        return wrapped
