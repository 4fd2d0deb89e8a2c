"""OpenTelemetry traces (app/tracing.py): a delivery's request span with its batch and
statement spans, client spans for outgoing calls, and nothing at all when tracing is off.

The spans go to the SDK's InMemorySpanExporter. The otel extra is part of the dev extra;
without it, the tests that need the SDK are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app import tracing
from tests.support import (
    INGEST_PATH,
    WEBHOOK_TOKEN,
    DestinationServer,
    LiveServer,
    condition_activity,
)


@pytest.fixture
def spans() -> Iterator[Any]:
    """Tracing on in this process, every span kept in memory; off again afterwards."""
    in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    exporter = in_memory.InMemorySpanExporter()
    assert tracing.configure(exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def _attributes_text(finished: list[Any]) -> str:
    return json.dumps([{**s.attributes, "name": s.name} for s in finished], default=str)


def test_a_delivery_makes_a_request_span_with_its_batch_and_statement_spans(
    spans: Any, make_app: Callable[..., Any]
) -> None:
    from opentelemetry.trace import SpanKind

    app = make_app()
    server = LiveServer(app).start()
    try:
        r = httpx.post(
            f"{server.url}{INGEST_PATH}?token={WEBHOOK_TOKEN}",
            content=json.dumps(condition_activity(991001)).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 200 and r.json() == {"id": 991001, "duplicate": False}
    finally:
        server.stop()
    finished = spans.get_finished_spans()
    requests = [
        s
        for s in finished
        if s.kind == SpanKind.SERVER and s.attributes.get("http.method") == "POST"
    ] or [s for s in finished if s.kind == SpanKind.SERVER and "POST" in s.name]
    assert len(requests) == 1, [s.name for s in finished]
    request = requests[0]
    batches = [s for s in finished if s.name == "ninjahook.group_commit"]
    assert len(batches) == 1
    batch = batches[0]
    assert batch.parent is not None and batch.parent.span_id == request.context.span_id
    assert batch.context.trace_id == request.context.trace_id
    assert batch.attributes["ninjahook.batch.size"] == 1
    assert (
        batch.attributes["db.system.name"] == app.app.extensions["ninjahook"].db.engine.dialect.name
    )
    statements = [
        s for s in finished if s.parent is not None and s.parent.span_id == batch.context.span_id
    ]
    assert statements, "no statement spans under the batch"
    assert all(s.kind == SpanKind.CLIENT and "db.query.text" in s.attributes for s in statements)
    assert any(s.attributes["db.operation.name"] == "INSERT" for s in statements)
    # The query token is in no span.
    assert WEBHOOK_TOKEN not in _attributes_text(finished)


def test_core_statements_are_traced_too(spans: Any, make_app: Callable[..., Any]) -> None:
    import sqlalchemy as sa

    db = make_app().app.extensions["ninjahook"].db
    spans.clear()
    with db.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    selects = [s for s in spans.get_finished_spans() if s.name == "SELECT"]
    assert selects and selects[0].attributes["db.query.text"] == "SELECT 1"


def test_a_notification_send_makes_a_client_span(spans: Any) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    from app.notifications.destinations import Envelope, send
    from app.notifications.routes import Destination
    from app.notifications.templates import Message

    receiver = DestinationServer().start()
    try:
        destination = Destination(name="d", kind="webhook", url=receiver.url + "?secret=abc")
        message = Message(title="t", text="x", event="notify", facts=(), context={})
        outcome = send(destination, message, Envelope("id-trace-1"), route="r", timeout=5)
    finally:
        receiver.stop()
    assert outcome.ok
    (client,) = [s for s in spans.get_finished_spans() if s.name == "notify webhook"]
    assert client.kind == SpanKind.CLIENT
    assert client.attributes["ninjahook.route"] == "r"
    assert client.attributes["ninjahook.delivery.id"] == "id-trace-1"
    assert client.attributes["server.address"] == "127.0.0.1"
    assert client.attributes["http.response.status_code"] == 200
    assert client.status.status_code != StatusCode.ERROR
    assert "secret=abc" not in _attributes_text([client])  # never the URL


def test_a_ninjaone_request_makes_a_client_span(spans: Any) -> None:
    from opentelemetry.trace import SpanKind

    from app.ninjaone.client import Credentials, NinjaOneClient
    from app.ninjaone.emulator import Emulator

    with Emulator() as emu:
        creds = Credentials(emu.url, emu.client_id, emu.client_secret)
        with NinjaOneClient(creds) as client:
            client.get_json("/v2/organizations")
    calls = [s for s in spans.get_finished_spans() if s.name.startswith("NinjaOne ")]
    assert {s.name for s in calls} >= {"NinjaOne POST", "NinjaOne GET"}  # token, then the GET
    assert all(s.kind == SpanKind.CLIENT for s in calls)
    (get,) = [s for s in calls if s.name == "NinjaOne GET"]
    assert get.attributes["url.path"].endswith("/v2/organizations")
    assert get.attributes["http.response.status_code"] == 200
    assert emu.client_secret not in _attributes_text(calls)


def test_tracing_off_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch, make_app: Callable[..., Any]
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    tracing.shutdown()
    assert not tracing.configure()  # nothing asked for it
    assert not tracing.active()
    # The helpers hand back one shared no-op, and the tracer is a no-op one.
    assert tracing.span("x") is tracing.statement_span("SELECT 1", "sqlite")
    assert tracing.client_span("y", {}) is tracing.span("x")
    assert tracing.current_context() is None
    if tracing.INSTALLED:
        from opentelemetry.trace import NoOpTracer

        assert isinstance(tracing.tracer(), NoOpTracer)
    # No request-span middleware, no statement listeners.
    app = make_app()
    names = [getattr(getattr(m, "func", m), "__name__", "") for m in app.middleware.middlewares]
    assert "RequestSpanMiddleware" not in names and "AccessLogMiddleware" in names
    assert not getattr(app.app.extensions["ninjahook"].db.engine, "_ninjahook_traced", False)


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console,none"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, True),
    ],
)
def test_the_otel_variables_decide(environ: dict[str, str], wanted: bool) -> None:
    assert tracing.wanted(environ) is wanted
