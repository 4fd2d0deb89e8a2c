"""The HTTP server's own limits: a connection must send its request headers in time.

uvicorn (0.55) starts its keep-alive timer only after a response, so a socket that
connects and sends nothing, or a partial request line, is held open for ever: tens of
thousands of those exhaust the worker's file descriptors and valid deliveries fail.
:class:`HeaderTimeoutProtocol` closes a connection whose headers are not complete
within ``NINJAHOOK_HEADER_TIMEOUT`` seconds of its opening or of its previous
response. The body has its own limit (:class:`app.web.middleware.BodyTimeoutMiddleware`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from app.config import load_config


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next request's headers again (keep-alive or pipelining).
        if not self.transport.is_closing():
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        if self.header_timeout > 0:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        # Only a connection between requests is closed: a request whose headers are
        # complete is answered (its body has the body timeout).
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


def protocol_with(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class with ``header_timeout`` seconds (0: no deadline)."""
    return type(
        "HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout}
    )


class Worker(UvicornWorker):
    """gunicorn's uvicorn worker with :class:`HeaderTimeoutProtocol`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.CONFIG_KWARGS = {
            **UvicornWorker.CONFIG_KWARGS,
            "http": protocol_with(load_config().header_timeout),
            # The access log is app.web.access_log's (it has the duration): not uvicorn's.
            "access_log": False,
        }
        super().__init__(*args, **kwargs)
