"""The access log: one line per HTTP request, with its method, path, status and duration.

uvicorn's own access line has no duration, so it is turned off (``access_log=False`` in
``ninjahook serve`` and in :class:`app.web.server.Worker`) and this middleware, the
outermost of ours, writes the line instead, to the ``ninjahook.access`` logger. In the
text format it reads like uvicorn's with the duration added::

    127.0.0.1:50312 - "POST /webhooks/ninjarmm/activity?token=[REDACTED] HTTP/1.1" 200 1.9ms

In the JSON format the line also carries ``method``, ``path`` (without the query string),
``status``, ``duration_ms``, ``client`` and, for a delivery, ``activity_id``. While the
request is served, every other JSON log line carries ``method`` and ``path`` as well
(:func:`app.logs.request_context`). The query string (where a token may be) is redacted
like every log line.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import request_context

log = logging.getLogger("ninjahook.access")


class AccessLogMiddleware:
    """Logs every HTTP request once it is answered (or has failed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception reaches the server
        path = scope.get("root_path", "") + scope["path"]
        method = scope["method"]

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with request_context(method=method, path=path) as fields:
            try:
                await self.app(scope, receive, send_status)
            finally:
                duration_ms = round((time.perf_counter() - started) * 1000, 1)
                _log_request(scope, method, path, status, duration_ms, fields)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _log_request(
    scope: Scope,
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    fields: dict[str, Any],
) -> None:
    query = scope.get("query_string", b"")
    target = quote(path) + ("?" + query.decode("latin-1") if query else "")
    client = _client(scope)
    extra: dict[str, Any] = {
        "client": client,
        "status": status,
        "duration_ms": duration_ms,
    }
    if "activity_id" in fields:
        extra["activity_id"] = fields["activity_id"]
    log.info(
        '%s - "%s %s HTTP/%s" %d %.1fms',
        client,
        method,
        target,
        scope.get("http_version", "1.1"),
        status,
        duration_ms,
        extra=extra,
    )
