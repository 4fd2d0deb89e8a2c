"""app/web/connexion_tuning.py: what it relies on in Connexion, and that it changes
no behaviour. These fail when an upgrade moves or changes anything the module reaches."""

from __future__ import annotations

import importlib.metadata
import inspect
import io
import re
from typing import Any

import connexion.apps.flask
import connexion.lifecycle
import connexion.middleware.context
import connexion.operations
import connexion.security
import connexion.utils
import pytest
from connexion.middleware.abstract import ROUTING_CONTEXT
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from app.web import connexion_tuning
from tests.support import (
    API_HEADERS,
    INGEST_PATH,
    ROOT,
    WEBHOOK_HEADERS,
    WEBHOOK_TOKEN,
    body,
    condition_activity,
)


def test_connexion_is_the_pinned_version_everywhere() -> None:
    installed = importlib.metadata.version("connexion")
    assert installed == connexion_tuning.CONNEXION_VERSION
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(
        rf'"connexion\[[^\]]*\]=={re.escape(connexion_tuning.CONNEXION_VERSION)}"', pyproject
    ), "pyproject.toml must pin connexion to the version connexion_tuning was written for"


def test_the_internals_it_replaces_are_where_it_expects_them() -> None:
    # FlaskOperation builds its decorator chain in a `fn` property from these attributes.
    assert isinstance(inspect.getattr_static(connexion.apps.flask.FlaskOperation, "fn"), property)
    params = inspect.signature(connexion.apps.flask.FlaskOperation.__init__).parameters
    assert {"fn", "jsonifier", "operation_id", "pythonic_params"} <= set(params)
    # The security handler asks _accepts_kwarg(func, keyword) per request.
    accepts = inspect.getattr_static(connexion.security.AbstractSecurityHandler, "_accepts_kwarg")
    assert isinstance(accepts, staticmethod)
    assert list(inspect.signature(accepts.__func__).parameters) == ["func", "keyword"]
    # WSGIRequest.files() reads the Werkzeug request it wraps.
    assert "_werkzeug_request" in inspect.getsource(connexion.lifecycle.WSGIRequest)
    # FlaskASGIApp serves the Flask app through `asgi_app`, an a2wsgi WSGIMiddleware.
    source = inspect.getsource(connexion.apps.flask.FlaskASGIApp)
    assert "self.asgi_app = WSGIMiddleware(self.app.wsgi_app)" in source
    assert "return await self.asgi_app(scope, receive, send)" in source
    # The routing middleware names the operation in the scope.
    assert ROUTING_CONTEXT == "connexion_routing"
    routing_source = inspect.getsource(connexion.middleware.routing.RoutingOperation)
    assert '"operation_id": self.operation_id' in routing_source
    # The context middleware, innermost, names the routed operation, whose `function`
    # is the handler webhook.yaml's operationId resolves to.
    context_source = inspect.getsource(connexion.middleware.context.ContextOperation.__call__)
    assert "_operation.set(self.operation)" in context_source
    assert isinstance(
        inspect.getattr_static(connexion.operations.AbstractOperation, "function"), property
    )


def test_the_lookups_it_caches_are_where_it_expects_them() -> None:
    from connexion.middleware.request_validation import RequestValidationOperation
    from connexion.operations import OpenAPIOperation

    body_definition = connexion_tuning._original_body_definition
    assert body_definition.__qualname__ == "OpenAPIOperation.body_definition"
    assert list(inspect.signature(body_definition).parameters) == ["self", "content_type"]
    validate = connexion_tuning._original_validate_mime_type
    assert validate.__qualname__ == "RequestValidationOperation.validate_mime_type"
    source = inspect.getsource(RequestValidationOperation.__call__)
    # The validation middleware reaches these through the module and the instance.
    assert "utils.extract_content_type(headers)" in inspect.getsource(
        RequestValidationOperation.extract_content_type
    )
    assert "self.validate_mime_type(mime_type)" in source
    assert "self._operation.body_schema(mime_type)" in source
    assert "body_definition" in inspect.getsource(OpenAPIOperation.body_schema)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-type", b"application/json; charset=utf-8")],
        [(b"Content-Type", b"text/plain"), (b"content-type", b"application/json")],
        [(b"accept", b"*/*")],
        {"Content-Type": "application/json"},
        {},
    ],
)
def test_extract_content_type_answers_as_connexion_does(headers: Any) -> None:
    assert connexion_tuning._extract_content_type(
        headers
    ) == connexion_tuning._original_extract_content_type(headers)


def test_a_wrong_media_type_stays_415_after_json_was_accepted(client: Any) -> None:
    for activity_id in (1, 2):
        ok = client.post(
            INGEST_PATH, content=body(condition_activity(activity_id)), headers=WEBHOOK_HEADERS
        )
        assert ok.status_code == 200
        wrong = client.post(
            INGEST_PATH,
            content=body(condition_activity(activity_id + 10)),
            headers={**WEBHOOK_HEADERS, "Content-Type": "application/xml"},
        )
        assert wrong.status_code == 415


def test_flask_operations_run_the_decorator_chain_and_signature_inspection_once(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    calls: list[Any] = []
    original = connexion.utils.inspect_function_arguments

    def counting(function: Any) -> Any:
        calls.append(function)
        return original(function)

    # Both the parameter decorator and the tuned security check import it from here.
    monkeypatch.setattr(connexion.decorators.parameter, "inspect_function_arguments", counting)
    monkeypatch.setattr(connexion.utils, "inspect_function_arguments", counting)
    with app.test_client() as client:
        for limit in range(1, 6):
            r = client.get(f"/activities?limit={limit}", headers=API_HEADERS)
            assert r.status_code == 200, r.text
        after_first = len(calls)
        assert after_first > 0
        for limit in range(6, 16):
            r = client.get(f"/activities?limit={limit}", headers=API_HEADERS)
            assert r.status_code == 200, r.text
    # Untuned Connexion inspects the handler and the token function on every request.
    assert len(calls) == after_first


def test_files_are_parsed_only_for_form_bodies() -> None:
    connexion_tuning.install()
    json_request = connexion.lifecycle.WSGIRequest(
        Request(
            EnvironBuilder(method="POST", data=b"{}", content_type="application/json").get_environ()
        )
    )
    assert json_request.files() == {}
    form = EnvironBuilder(method="POST", data={"upload": (io.BytesIO(b"hello"), "a.txt")})
    files = connexion.lifecycle.WSGIRequest(Request(form.get_environ())).files()
    assert list(files) == ["upload"]
    assert files["upload"][0].read() == b"hello"


def test_ingest_answers_as_before_through_the_coroutine_path(client: Any) -> None:
    answers = []
    new = client.post(INGEST_PATH, content=body(condition_activity(1)), headers=WEBHOOK_HEADERS)
    again = client.post(INGEST_PATH, content=body(condition_activity(1)), headers=WEBHOOK_HEADERS)
    invalid = client.post(INGEST_PATH, content=b'{"id": "one"}', headers=WEBHOOK_HEADERS)
    unauthenticated = client.post(INGEST_PATH, content=body(condition_activity(2)))
    wrong_type = client.post(
        INGEST_PATH,
        content=body(condition_activity(3)),
        headers={**WEBHOOK_HEADERS, "Content-Type": "text/plain"},
    )
    for r in (new, again, invalid, unauthenticated, wrong_type):
        answers.append((r.status_code, r.headers["content-type"]))
    assert new.json() == {"id": 1, "duplicate": False}
    assert new.content == b'{"duplicate": false, "id": 1}\n'
    assert new.headers["content-length"] == str(len(new.content))
    assert again.json() == {"id": 1, "duplicate": True}
    assert invalid.json()["field"] == "id"
    assert answers == [
        (200, "application/json"),
        (200, "application/json"),
        (400, "application/problem+json"),
        (401, "application/problem+json"),
        (415, "application/problem+json"),
    ]


def test_only_coroutine_handlers_skip_flask(make_app: Any) -> None:
    app = make_app()
    inner = app._middleware_app.asgi_app
    assert isinstance(inner, connexion_tuning.CoroutineOperations)
    reached_flask: list[str] = []
    flask_side = inner.fallback

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        reached_flask.append(scope["path"])
        await flask_side(scope, receive, send)

    inner.fallback = recording
    with app.test_client() as client:
        assert client.get("/healthz").status_code == 200
        r = client.post(INGEST_PATH, content=body(condition_activity(9)), headers=WEBHOOK_HEADERS)
        assert r.status_code == 200
        r = client.post(
            f"{INGEST_PATH}?token={WEBHOOK_TOKEN}",
            content=body(condition_activity(10)),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 200
        assert client.get("/activities/9", headers=API_HEADERS).json()["id"] == 9
    assert reached_flask == ["/healthz", "/activities/9"]


def test_a_coroutine_handler_must_read_the_request_from_the_context() -> None:
    from types import SimpleNamespace

    from connexion.context import _operation

    async def with_parameters(body: Any) -> Any:
        raise AssertionError("never called")

    async def without_parameters() -> Any:
        return {}, 200, {}

    def plain() -> Any:
        return {}, 200, {}

    inner = connexion_tuning.CoroutineOperations(fallback=None, jsonifier=None)  # type: ignore[arg-type]

    def routed(operation_id: str, function: Any) -> Any:
        _operation.set(SimpleNamespace(function=function))
        scope = {"type": "http", "extensions": {ROUTING_CONTEXT: {"operation_id": operation_id}}}
        return inner._coroutine_handler(scope)

    assert routed("a", without_parameters) is without_parameters
    assert routed("b", plain) is None  # Flask serves it
    with pytest.raises(TypeError, match="takes no arguments"):
        routed("c", with_parameters)
    # Decided once per operation.
    assert routed("a", plain) is without_parameters


def test_database_errors_still_become_503_on_the_coroutine_path(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    app = make_app()
    state = app.app.extensions["ninjahook"]

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    # The SQLite path opens a transaction per batch; PostgreSQL's writer takes a
    # connection from the engine and keeps it: both fail.
    monkeypatch.setattr(state.db, "begin", broken)
    monkeypatch.setattr(state.db.engine, "connect", broken)
    with app.test_client() as client:
        r = client.post(INGEST_PATH, content=body(condition_activity(11)), headers=WEBHOOK_HEADERS)
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
