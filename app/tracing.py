"""Optional OpenTelemetry tracing: the one place that imports opentelemetry.

Installed with the ``otel`` extra (``pip install 'ninjahook[otel]'``) and configured only
by the standard ``OTEL_*`` variables. The rule: tracing is on in a process when the
extra is installed, ``OTEL_SDK_DISABLED`` is not ``true``, and ``OTEL_TRACES_EXPORTER``
is set to an exporter other than ``none`` (``otlp`` needs an OTLP exporter package,
``console`` prints spans). Unlike the SDK's own default, an unset ``OTEL_TRACES_EXPORTER``
means off: nothing is exported unless asked for. ``OTEL_SERVICE_NAME`` (default
``ninjahook``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_*`` and
``OTEL_BSP_*`` work as the SDK documents them.

What is traced, when on:

* every HTTP request (``OpenTelemetryMiddleware``, :func:`asgi_middleware`), its query
  string redacted as the log is;
* each group-commit batch (``ninjahook.group_commit``: batch size, database system),
  a child of the first delivery's request span and linked to the others';
* every database statement, Core (SQLAlchemy's cursor events, :func:`instrument_engine`)
  and prepared (:func:`statement_span`);
* every outgoing call: NinjaOne API requests and notification sends (:func:`client_span`).

When off (or not installed), every helper here returns a shared no-op at the cost of a
function call, and :func:`tracer` is a no-op tracer.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

log = logging.getLogger(__name__)

try:  # the otel extra
    from opentelemetry import trace as _trace
    from opentelemetry.context import get_current as _current_context
    from opentelemetry.sdk.resources import Resource as _Resource
    from opentelemetry.sdk.trace import TracerProvider as _TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor as _BatchSpanProcessor
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor as _SimpleSpanProcessor
    from opentelemetry.trace import Link as _Link
    from opentelemetry.trace import SpanKind as _SpanKind
except ImportError:  # pragma: no cover - exercised where the extra is absent
    _trace = None  # type: ignore[assignment]

INSTALLED = _trace is not None
TRACER_NAME = "ninjahook"

_NULL: AbstractContextManager[None] = nullcontext()
# The SDK provider and tracer of this process while tracing is on, else None.
_provider: Any = None
_tracer: Any = None


class _NoopTracer:
    """What :func:`tracer` returns when the extra is not installed."""

    def start_as_current_span(self, *_args: Any, **_kwargs: Any) -> AbstractContextManager[None]:
        return _NULL


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for tracing (see the module's text)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return any(e and e != "none" for e in exporters)


def active() -> bool:
    """Whether this process records spans."""
    return _tracer is not None


def tracer() -> Any:
    """The process's tracer: the SDK's while tracing is on, a no-op one otherwise."""
    if _tracer is not None:
        return _tracer
    if _trace is not None:
        return _trace.NoOpTracer()
    return _NoopTracer()


def _exporters_from_env() -> list[Any]:
    names = [e.strip().lower() for e in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    exporters: list[Any] = []
    for name in names:
        if not name or name == "none":
            continue
        try:
            if name == "console":
                from opentelemetry.sdk.trace.export import ConsoleSpanExporter

                exporters.append(ConsoleSpanExporter())
            elif name == "otlp":
                protocol = os.environ.get(
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                    os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ).strip()
                if protocol == "grpc":
                    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                        OTLPSpanExporter,
                    )
                else:
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                        OTLPSpanExporter,
                    )
                exporters.append(OTLPSpanExporter())
            else:
                log.warning("tracing: OTEL_TRACES_EXPORTER %r is not supported; ignored", name)
        except ImportError as exc:
            log.warning(
                "tracing: the %s exporter is not installed (%s); "
                "pip install opentelemetry-exporter-otlp",
                name,
                exc.name,
            )
    return exporters


def configure(exporter: Any = None) -> bool:
    """Turn tracing on in this process and return whether it is on.

    With ``exporter`` (a ``SpanExporter``, as tests pass the SDK's
    ``InMemorySpanExporter``), spans go to it as each ends. Without, the ``OTEL_*``
    variables decide (:func:`wanted`), spans are batched, and the provider also becomes
    OpenTelemetry's global one. A second call without ``exporter`` keeps what is set.
    """
    global _provider, _tracer
    if _trace is None:
        return False
    if exporter is None:
        if _tracer is not None:
            return True
        if not wanted():
            return False
        exporters = _exporters_from_env()
        if not exporters:
            return False
        processors: list[Any] = [_BatchSpanProcessor(e) for e in exporters]
    else:
        shutdown()
        processors = [_SimpleSpanProcessor(exporter)]
    resource = _Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(_Resource({"service.name": "ninjahook"}))
    provider = _TracerProvider(resource=resource)
    for processor in processors:
        provider.add_span_processor(processor)
    if exporter is None:
        _trace.set_tracer_provider(provider)
    _provider, _tracer = provider, provider.get_tracer(TRACER_NAME)
    return True


def shutdown() -> None:
    """Flush and end tracing in this process (tracing is off afterwards)."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def provider() -> Any:
    """The SDK tracer provider while tracing is on, else None."""
    return _provider


# --- spans ---------------------------------------------------------------------------


def current_context() -> Any:
    """The current trace context, to carry to another thread (None when off)."""
    return _current_context() if _tracer is not None else None


def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent: Any = None,
    links_from: Iterable[Any] = (),
) -> AbstractContextManager[Any]:
    """An internal span, current inside the block; ``parent`` is a context from
    :func:`current_context` (another thread's), ``links_from`` more such contexts."""
    if _tracer is None:
        return _NULL
    links = []
    for ctx in links_from:
        linked = _trace.get_current_span(ctx).get_span_context() if ctx is not None else None
        if linked is not None and linked.is_valid:
            links.append(_Link(linked))
    return _tracer.start_as_current_span(  # type: ignore[no-any-return]
        name, context=parent, attributes=dict(attributes or {}), links=links
    )


def client_span(name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Any]:
    """A client span (an outgoing call), current inside the block."""
    if _tracer is None:
        return _NULL
    return _tracer.start_as_current_span(  # type: ignore[no-any-return]
        name, kind=_SpanKind.CLIENT, attributes=dict(attributes)
    )


def record_outcome(
    span: Any, ok: bool, status_code: int | None = None, error: str | None = None
) -> None:
    """Put an outgoing call's answer on its span (from :func:`client_span`)."""
    if span is None or _trace is None:
        return
    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
    if not ok:
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, error))


_OPERATION = re.compile(r"\s*(\w+)")


def _statement_attributes(sql: str, system: str) -> tuple[str, dict[str, Any]]:
    match = _OPERATION.match(sql)
    operation = match.group(1).upper() if match else "SQL"
    return operation, {
        "db.system.name": system,
        "db.operation.name": operation,
        "db.query.text": sql,
    }


def statement_span(sql: str, system: str) -> AbstractContextManager[Any]:
    """A client span around one database statement (its SQL has placeholders only)."""
    if _tracer is None:
        return _NULL
    name, attributes = _statement_attributes(sql, system)
    return _tracer.start_as_current_span(  # type: ignore[no-any-return]
        name, kind=_SpanKind.CLIENT, attributes=attributes
    )


_SPANS_KEY = "ninjahook.tracing.spans"


def instrument_engine(engine: Any) -> None:
    """Trace every statement that SQLAlchemy runs on ``engine`` (while tracing is on)."""
    if _tracer is None or getattr(engine, "_ninjahook_traced", False):
        return
    from sqlalchemy import event

    system = engine.dialect.name

    def before(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if _tracer is None:
            return
        name, attributes = _statement_attributes(statement, system)
        started = _tracer.start_span(name, kind=_SpanKind.CLIENT, attributes=attributes)
        conn.info.setdefault(_SPANS_KEY, []).append(started)

    def after(conn: Any, *_args: Any) -> None:
        spans = conn.info.get(_SPANS_KEY)
        if spans:
            spans.pop().end()

    def failed(context: Any) -> None:
        conn = context.connection
        spans = conn.info.get(_SPANS_KEY) if conn is not None and not conn.closed else None
        if spans:
            ended = spans.pop()
            ended.record_exception(context.original_exception)
            ended.set_status(_trace.Status(_trace.StatusCode.ERROR))
            ended.end()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", failed)
    engine._ninjahook_traced = True


# --- the ASGI request span -------------------------------------------------------------

_QUERY_KEY = "ninjahook.tracing.query_string"


class _HideQuery:
    """Outside OpenTelemetry's middleware: it records the query string, which may hold a
    token, so it sees the redacted one; :class:`_RestoreQuery` gives the app the real one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if query:
            from app.logs import redact

            text = query.decode("latin-1")
            redacted = redact("?" + text)[1:]
            if redacted != text:
                scope = {**scope, "query_string": redacted.encode("latin-1"), _QUERY_KEY: query}
        await self.app(scope, receive, send)


class _RestoreQuery:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if _QUERY_KEY in scope:
            scope = {**scope, "query_string": scope[_QUERY_KEY]}
            del scope[_QUERY_KEY]
        await self.app(scope, receive, send)


def asgi_middleware() -> type | None:
    """An ASGI middleware class (``cls(app)``) that makes each HTTP request's server span,
    or None when tracing is off or the ASGI instrumentation is not installed."""
    if _tracer is None:
        return None
    try:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    except ImportError:
        log.warning("tracing: opentelemetry-instrumentation-asgi is not installed")
        return None
    provider_now = _provider

    class RequestSpanMiddleware:
        """The server span of every HTTP request (its query string redacted)."""

        def __init__(self, app: Any) -> None:
            self.app = _HideQuery(
                OpenTelemetryMiddleware(
                    _RestoreQuery(app),
                    tracer_provider=provider_now,
                    exclude_spans=["receive", "send"],
                )
            )

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    return RequestSpanMiddleware
