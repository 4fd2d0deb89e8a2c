"""ASGI middleware, one concern each."""

from __future__ import annotations

import asyncio
from typing import Any

from connexion.exceptions import ProblemException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.state import AppState
from app.web.request_state import SCOPE_KEY, RequestState


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


class HeadersTooLarge(ProblemException):
    """Too many header fields, or one too long."""

    def __init__(self, detail: str) -> None:
        super().__init__(status=431, title="Request Header Fields Too Large", detail=detail)


# gunicorn's own defaults (limit_request_fields, limit_request_field_size), which its
# uvicorn workers do not apply: the httptools parser accepts any number and size.
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD_BYTES = 8190


class HeaderLimitMiddleware:
    """Answers a header flood with 431 before any other layer looks at the headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            if len(headers) > MAX_HEADER_FIELDS:
                raise HeadersTooLarge(
                    f"{len(headers)} header fields; at most {MAX_HEADER_FIELDS} are accepted"
                )
            for name, value in headers:
                if len(name) + len(value) > MAX_HEADER_FIELD_BYTES:
                    raise HeadersTooLarge(
                        f"the header {name[:64].decode('latin-1')!r} is longer than "
                        f"{MAX_HEADER_FIELD_BYTES} bytes"
                    )
        await self.app(scope, receive, send)


class BodyTimeout(ProblemException):
    """The body did not arrive in time (a slow-drip sender)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            status=408,
            title="Request Timeout",
            detail=f"the request body did not arrive within {seconds:g} seconds "
            "(NINJAHOOK_BODY_TIMEOUT)",
        )


class BodyTimeoutMiddleware:
    """Bounds the time a client may take to send its whole body.

    Without it a sender dripping a byte at a time holds a connection, and the
    request's buffers, for as long as it likes.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.seconds:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_complete = False

        async def timed_receive() -> Message:
            nonlocal body_complete
            if body_complete:
                # After the body, receive() only waits for a disconnect: no deadline.
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.seconds) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        await self.app(scope, timed_receive, send)


def normalize_content_type(value: bytes) -> bytes:
    """A Content-Type value with its media type and parameter names in lower case.

    Media types and parameter names are case-insensitive (RFC 9110, 8.3.1), but Connexion
    picks the body validator by an exact, case-sensitive lookup: ``Application/Json``
    passed its media-type check and then skipped validation altogether. Parameter values
    (a multipart boundary is case-sensitive) are kept as sent; whitespace around the
    parts is dropped, so that ``charset`` is found after ``; ``.
    """
    media_type, _, parameters = value.partition(b";")
    parts = [media_type.strip().lower()]
    for parameter in parameters.split(b";") if parameters else []:
        name, equals, param_value = parameter.partition(b"=")
        if name.strip():
            parts.append(name.strip().lower() + equals + param_value.strip())
    return b";".join(parts)


class ContentTypeMiddleware:
    """Normalizes the Content-Type header (see :func:`normalize_content_type`) before any
    other layer reads it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            for index, (name, value) in enumerate(headers):
                if name == b"content-type":
                    normalized = normalize_content_type(value)
                    if normalized != value:
                        headers = list(headers)
                        headers[index] = (name, normalized)
                        scope = dict(scope)
                        scope["headers"] = headers
                    break
        await self.app(scope, receive, send)
