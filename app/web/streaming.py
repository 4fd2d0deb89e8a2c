"""Streamed answers: noticing that the client went away, and checking JSON Lines.

A Flask handler's generator runs in a2wsgi's thread. When the client disconnects,
uvicorn silently drops what is sent after (its ``send`` returns), and a2wsgi keeps
iterating the generator to its end: an export of a million rows would go on reading
the database for nobody. :class:`DisconnectMiddleware` watches the ASGI ``receive``
channel of the streamed operations and sets a :class:`threading.Event` in the scope
when the client goes; :func:`client_gone` gives a handler a ``stop()`` for its
generator, checked between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Collection
from typing import Any

from connexion.exceptions import NonConformingResponseBody
from connexion.validators import AbstractResponseBodyValidator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SCOPE_KEY = "ninjahook.disconnected"


class DisconnectMiddleware:
    """For requests to ``paths``: pump ``receive`` in a task, and set the scope's
    :data:`SCOPE_KEY` event when ``http.disconnect`` arrives.

    Downstream reads the same messages from a queue, so ``receive`` still has one reader.
    """

    def __init__(self, app: ASGIApp, paths: Collection[str]) -> None:
        self.app = app
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        gone = threading.Event()
        scope[SCOPE_KEY] = gone
        queue: asyncio.Queue[Message] = asyncio.Queue()

        async def pump() -> None:
            while True:
                message = await receive()
                await queue.put(message)
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        task = asyncio.create_task(pump())
        try:
            await self.app(scope, queue.get, send)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def client_gone(environ: dict[str, Any]) -> Callable[[], bool]:
    """A ``stop()`` for a streaming generator: true once the client has disconnected
    (always false outside :class:`DisconnectMiddleware`'s paths)."""
    scope = environ.get("asgi.scope") or {}
    event = scope.get(SCOPE_KEY)
    if not isinstance(event, threading.Event):
        return lambda: False
    return event.is_set


class JSONLinesResponseValidator(AbstractResponseBodyValidator):
    """Checks an ``application/x-ndjson`` answer line by line as it streams (response
    validation, on in the tests): every line is one JSON object. Connexion's own map
    sends every ``*json`` type to its JSON validator, which would hold the whole body
    and parse it as one document."""

    def wrap_send(self, send: Send) -> Send:
        pending = bytearray()

        async def send_(message: Message) -> None:
            if message["type"] == "http.response.body":
                pending.extend(message.get("body", b""))
                *lines, rest = bytes(pending).split(b"\n")
                pending[:] = rest
                for line in lines:
                    self._check(line)
                if not message.get("more_body", False) and pending:
                    raise NonConformingResponseBody("the last JSON line has no newline")
            await send(message)

        return send_

    @staticmethod
    def _check(line: bytes) -> None:
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise NonConformingResponseBody(f"a line is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise NonConformingResponseBody("a line is not a JSON object")
