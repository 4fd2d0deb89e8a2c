"""Everything that reaches into Connexion's internals, in one place.

Connexion is pinned (``connexion==3.3.0`` in pyproject.toml) because this module
depends on how that version is built; tests/test_connexion_tuning.py fails when an
upgrade changes any of it. Nothing here changes what a request means: webhook.yaml
still routes every request, and the security, validation and our own middleware
still run for every request. What changes is work Connexion repeats per request:

* ``FlaskOperation.fn`` builds a new decorator chain (and runs
  ``inspect.signature`` on the handler) for every request; it is built once here.
* ``AbstractSecurityHandler._accepts_kwarg`` runs ``inspect.signature`` on the token
  check functions for every request; the answer is cached per function.
* ``utils.extract_content_type`` builds typing generics per call; the body definition
  of an operation is looked up three times per request, through fnmatch; an accepted
  media type is matched again for every request. All three are cached or simplified.
* ``WSGIRequest.files()`` makes Werkzeug set up form parsing for every request,
  even for JSON bodies that cannot carry files; only form bodies reach it here.
* a2wsgi, the ASGI-to-WSGI bridge, makes four to five blocking hand-offs between
  its thread and the event loop per request, and Flask then builds its request
  and app contexts. Operations whose handler is a coroutine function (the ingest
  hot path, which awaits its group commit) are called by
  :class:`CoroutineOperations` directly on the event loop, after Connexion has
  routed, authenticated and validated the request from webhook.yaml; the handler
  returns ``body, status, headers`` as the Flask handlers do. Every other
  operation goes to Flask through a2wsgi.

And once per worker start: :func:`load_specification` parses webhook.yaml with
libyaml's C loader for ``add_api``, instead of Connexion's pure-Python parse.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import connexion.apps.flask
import connexion.context
import connexion.lifecycle
import connexion.middleware.request_validation
import connexion.middleware.routing
import connexion.operations
import connexion.security
import connexion.utils
import yaml
from connexion import FlaskApp
from connexion.decorators import FlaskDecorator
from connexion.jsonifier import Jsonifier
from connexion.middleware.abstract import ROUTING_CONTEXT
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

# The versions this module was written against; the tests check both.
CONNEXION_VERSION = "3.3.0"

_FORM_MIMETYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

_installed = False


class _OnceFlaskDecorator(FlaskDecorator):
    """Connexion's FlaskDecorator, decorating the handler once instead of per request.

    The chain it builds depends only on the handler (its signature) and on the
    decorator's settings; the request and the operation are looked up at call time
    through Connexion's context variables, as the per-request chain does.
    """

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        decorated = self.decorate(function)
        framework = self.framework

        @functools.wraps(function)
        def wrapper(*_args: Any, **_kwargs: Any) -> Any:
            return decorated(framework.get_request(uri_parser=self.uri_parser))

        return wrapper


def _cached_fn(self: Any) -> Callable[..., Any]:
    fn: Callable[..., Any] | None = self.__dict__.get("_ninjahook_fn")
    if fn is None:
        decorator = _OnceFlaskDecorator(
            pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )
        fn = decorator(self._fn)
        self.__dict__["_ninjahook_fn"] = fn
    return fn


def _files_for_forms_only(self: Any) -> dict[str, Any]:
    # Only form and multipart bodies carry files; for anything else Werkzeug would
    # build a form parser just to find none.
    if self._werkzeug_request.mimetype not in _FORM_MIMETYPES:
        return {}
    return _original_files(self)


def _extract_content_type(headers: Any) -> str | None:
    # Connexion's version builds typing generics (t.Collection[t.Tuple[...]]) on every
    # call just to annotate a local variable; the answer is the same.
    pairs = headers.items() if isinstance(headers, dict) else headers
    for key, value in pairs:
        name = key.decode("latin-1") if isinstance(key, bytes) else key
        if name.lower() == "content-type":
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _cached_body_definition(self: Any, content_type: str | None = None) -> dict[str, Any]:
    # The body definition depends only on the spec, but Connexion looks it up (through
    # fnmatch-based media-type matching) three times per request.
    cache: dict[str | None, dict[str, Any]] = self.__dict__.setdefault("_ninjahook_body", {})
    definition = cache.get(content_type)
    if definition is None:
        definition = _original_body_definition(self, content_type)
        cache[content_type] = definition
    return definition


def _validate_mime_type_once(self: Any, mime_type: str) -> None:
    # Remember the media types this operation accepted: re-matching them builds a
    # MediaTypeDict and runs fnmatch for every request. Rejections are not cached.
    accepted: set[str] = self.__dict__.setdefault("_ninjahook_accepted", set())
    if mime_type in accepted:
        return
    _original_validate_mime_type(self, mime_type)
    if len(accepted) < 32:
        accepted.add(mime_type)


@functools.lru_cache(maxsize=256)
def _accepts_kwarg(func: Callable[..., Any], keyword: str) -> bool:
    # Connexion asks, for every request, whether a security function takes
    # ``request``/``required_scopes``, running inspect.signature each time.
    arguments, has_kwargs = connexion.utils.inspect_function_arguments(func)
    return has_kwargs or keyword in arguments


_original_files: Callable[[Any], dict[str, Any]] = connexion.lifecycle.WSGIRequest.files
_original_extract_content_type: Callable[[Any], str | None] = connexion.utils.extract_content_type
_original_body_definition: Callable[..., dict[str, Any]] = (
    connexion.operations.OpenAPIOperation.body_definition
)
_original_validate_mime_type: Callable[[Any, str], None] = (
    connexion.middleware.request_validation.RequestValidationOperation.validate_mime_type
)


class _OperationsOfPath:
    """Every method of one path behind one Starlette route, so that a 405 names them all
    in ``Allow`` (Connexion adds a route per method, and Starlette answers a method a
    path lacks from the first route of that path only)."""

    def __init__(self) -> None:
        self.operations: dict[str, ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        operation = self.operations.get(method) or self.operations["GET"]  # HEAD
        await operation(scope, receive, send)


def _add_operation_by_path(
    self: Any, method: str, path: str, operation: ASGIApp, name: str | None = None
) -> None:
    routes = self.router.routes
    for index, route in enumerate(routes):
        if isinstance(route, Route) and route.path == path:
            assert isinstance(route.endpoint, _OperationsOfPath)
            route.endpoint.operations[method.upper()] = operation
            routes[index] = Route(path, route.endpoint, methods=list(route.endpoint.operations))
            return
    by_path = _OperationsOfPath()
    by_path.operations[method.upper()] = operation
    self.router.add_route(path, by_path, methods=[method])


def install() -> None:
    """Apply the class-level tunings once per process (idempotent).

    :raises RuntimeError: when the installed Connexion is not the pinned version.
    """
    global _installed
    if _installed:
        return
    found = importlib.metadata.version("connexion")
    if found != CONNEXION_VERSION:
        raise RuntimeError(
            f"app/web/connexion_tuning.py was written for connexion {CONNEXION_VERSION}, "
            f"found {found}: re-check it and its tests before upgrading"
        )
    connexion.apps.flask.FlaskOperation.fn = property(_cached_fn)
    connexion.lifecycle.WSGIRequest.files = _files_for_forms_only
    connexion.security.AbstractSecurityHandler._accepts_kwarg = staticmethod(_accepts_kwarg)
    connexion.utils.extract_content_type = _extract_content_type
    connexion.operations.OpenAPIOperation.body_definition = _cached_body_definition
    validation_operation = connexion.middleware.request_validation.RequestValidationOperation
    validation_operation.validate_mime_type = _validate_mime_type_once
    connexion.middleware.routing.RoutingAPI._add_operation_internal = _add_operation_by_path
    _installed = True


def load_specification(path: Path) -> dict[str, Any]:
    """webhook.yaml parsed with libyaml's C loader, for ``add_api``.

    Given a file name, Connexion parses it with PyYAML's pure-Python loader (and runs it
    through Jinja, for which we pass no arguments): about 0.4 s of every worker's start
    for our spec, against 0.08 s here. The result is the same document.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as fh:
        spec: dict[str, Any] = yaml.load(fh, Loader=loader)
    return spec


def tune_app(app: FlaskApp) -> None:
    """Apply the tunings and serve ``app``'s coroutine handlers without Flask.

    Call after ``add_api``. The middleware stack is built on first request, from the
    Flask-side ASGI app set here, so everything Connexion and we add still wraps it.
    """
    install()
    asgi_side = app._middleware_app
    asgi_side.asgi_app = CoroutineOperations(
        fallback=asgi_side.asgi_app,
        # The Flask app's JSON provider, as Flask handlers' answers use (sorted keys).
        jsonifier=Jsonifier(app.app.json),
    )


Answer = tuple[Any, int, dict[str, str]]


class CoroutineOperations:
    """The innermost ASGI app: calls coroutine handlers itself, passes the rest to Flask.

    Connexion's ContextMiddleware, just outside, has set the routed operation in
    ``connexion.context``; its handler (the function webhook.yaml's operationId
    names) is awaited here when it is a coroutine function that takes no
    arguments: it reads what it needs through :func:`app.web.context.current_request`.
    Exceptions propagate to Connexion's exception middleware, as they do from
    Flask, so the error handlers answer them.
    """

    def __init__(self, *, fallback: ASGIApp, jsonifier: Jsonifier) -> None:
        self.fallback = fallback
        self.jsonifier = jsonifier
        self._handlers: dict[str, Callable[[], Awaitable[Answer]] | None] = {}

    def _coroutine_handler(self, scope: Scope) -> Callable[[], Awaitable[Answer]] | None:
        if scope["type"] != "http":
            return None
        routing = scope.get("extensions", {}).get(ROUTING_CONTEXT) or {}
        operation_id = routing.get("operation_id")
        if operation_id is None:
            return None
        try:
            return self._handlers[operation_id]
        except KeyError:
            pass
        function = connexion.context.operation.function
        handler = function if inspect.iscoroutinefunction(function) else None
        if handler is not None and inspect.signature(handler).parameters:
            raise TypeError(
                f"{operation_id}: a coroutine handler takes no arguments here "
                "(read the request through app.web.context.current_request)"
            )
        self._handlers[operation_id] = handler
        return handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._coroutine_handler(scope)
        if handler is None:
            await self.fallback(scope, receive, send)
            return
        body, status, headers = await handler()
        content = body if isinstance(body, bytes) else self.jsonifier.dumps(body).encode()
        raw_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
        ]
        raw_headers.append((b"content-length", str(len(content)).encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": content, "more_body": False})
