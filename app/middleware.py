"""ASGI middleware, one concern each."""

from __future__ import annotations

from typing import Any

from connexion.exceptions import ProblemException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.state import SCOPE_KEY, AppState, RequestState


class PayloadTooLarge(ProblemException):
    """The body exceeds NINJAHOOK_MAX_BODY_BYTES."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status=413,
            title="Payload Too Large",
            detail=f"the request body exceeds the limit of {limit} bytes "
            "(NINJAHOOK_MAX_BODY_BYTES)",
        )


class RequestStateMiddleware:
    """Puts a fresh :class:`RequestState` into every HTTP scope (outermost layer)."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SCOPE_KEY] = RequestState(app=self.state)
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Enforces the body size limit from Content-Length and again while reading.

    Counting while reading covers chunked bodies and senders that understate
    Content-Length, so no framing can push more than the limit into memory.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise ProblemException(
                        status=400, title="Bad Request", detail="Content-Length is not a number"
                    ) from None
                if declared > self.limit:
                    raise PayloadTooLarge(self.limit)
        received = 0
        limit = self.limit

        async def counted_receive() -> Message:
            nonlocal received
            message: Any = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit)
            return message  # type: ignore[no-any-return]

        await self.app(scope, counted_receive, send)
