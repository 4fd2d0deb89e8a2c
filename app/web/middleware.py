"""ASGI middleware, one concern each."""

from __future__ import annotations

import asyncio
import json
import re
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


_REPEATED_SLASHES = re.compile(r"/{2,}")
_REPEATED_SLASHES_BYTES = re.compile(rb"/{2,}")
# Paths under which a trailing slash is the real path (Connexion's Swagger UI).
_TRAILING_SLASH_PATHS = ("/docs/",)
_NOT_FOUND_BODY = json.dumps(
    {
        "type": "about:blank",
        "title": "Not Found",
        "detail": "no such path (paths do not end in a slash)",
        "status": 404,
    }
).encode()


class PathMiddleware:
    """Makes odd request paths safe before anything routes them (the outermost layer).

    - Repeated slashes collapse into one, as nginx's ``merge_slashes`` does: a base URL
      ending in ``/`` with the path appended (``/webhooks//ninjarmm/activity``) is
      delivered normally. Without this, Flask answered 308 with the redirect target
      (and its ``?token=``) in the problem body and the log, and ``//anything`` failed
      with a 500.
    - A path ending in a slash is answered 404 problem+json here. Starlette would
      redirect it, to an absolute URL built from the Host header and carrying the
      query string (a token included).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if "//" in path:
            path = _REPEATED_SLASHES.sub("/", path)
            scope = dict(scope)
            scope["path"] = path
            raw_path = scope.get("raw_path")
            if isinstance(raw_path, bytes):
                scope["raw_path"] = _REPEATED_SLASHES_BYTES.sub(b"/", raw_path)
        if len(path) > 1 and path.endswith("/") and not path.startswith(_TRAILING_SLASH_PATHS):
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(_NOT_FOUND_BODY)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _NOT_FOUND_BODY})
            return
        await self.app(scope, receive, send)


# The dashboard's pages load their stylesheet and script from /ui/static and fetch the
# live fragment from /ui/live: nothing inline, nothing from elsewhere.
DASHBOARD_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        b"object-src 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
_DASHBOARD_PATHS = ("/", "/login", "/logout")


def is_dashboard_path(path: str) -> bool:
    """Whether ``path`` is the dashboard's: its pages, login, logout and /ui/…."""
    return path in _DASHBOARD_PATHS or path.startswith("/ui/")


class DashboardHeadersMiddleware:
    """Adds Content-Security-Policy (``frame-ancestors 'none'``), nosniff, a referrer
    policy and X-Frame-Options to every dashboard answer, whatever its status or which
    layer made it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_dashboard_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(n, v) for n, v in DASHBOARD_HEADERS if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, secured_send)
