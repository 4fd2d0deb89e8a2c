"""Odd request paths and query strings: no redirect, no traceback, no token in any log line.

The requests are written byte for byte on a socket (an HTTP client would normalize
``//`` or dot segments away) to the production server, gunicorn at log level DEBUG with
its access log on. After every request the captured log is searched for the token.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from app.logs import install_redaction, redact
from tests.reliability.harness import stored_counts
from tests.support import (
    API_HEADERS,
    BACKENDS,
    INGEST_PATH,
    WEBHOOK_TOKEN,
    body,
    minimal_activity,
    scratch_database,
)
from tests.test_auth import Deployment

TOKEN = "whk_odd_T9vQ2mXa7LcR4pZe"
READ_TOKEN = "api_read_V1g8MqZ3tU7wC0eF"


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(url: str, method: str, target: str, payload: bytes = b"") -> Answer:
    """One request with ``target`` sent exactly as given, ``Host: evil.example`` (where
    a redirect built from the Host header would go) and ``Connection: close``."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode("latin-1")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    header_block, _, content = raw.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        content = _unchunk(content)
    return Answer(int(status_line.split()[1]), headers, content)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("odd_paths")
    with scratch_database(request.param, tmp, "ninjahook_odd_paths") as url:
        dep = Deployment(url, tmp / "instance", tmp / "gunicorn.log")
        dep.start(TOKEN)
        try:
            yield dep
        finally:
            dep.stop()


def log_leaks(dep: Deployment) -> list[str]:
    """Log lines holding the token (or a middle part of it, or it URL-encoded)."""
    time.sleep(0.2)  # gunicorn writes the access line after the answer
    text = dep.log.read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if TOKEN in line or TOKEN[6:18] in line]


def assert_not_found_problem(answer: Answer) -> None:
    assert answer.status == 404, answer
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["status"] == 404
    assert "location" not in answer.headers
    assert TOKEN.encode() not in answer.body


def test_a_doubled_slash_delivers_normally(deployment: Deployment) -> None:
    before = stored_counts(deployment.database_url)
    for n, target in enumerate(
        [
            f"/webhooks//ninjarmm/activity?token={TOKEN}",
            f"//webhooks/ninjarmm/activity?token={TOKEN}",
            f"/webhooks/ninjarmm///activity?token={TOKEN}",
        ]
    ):
        answer = raw_request(deployment.url, "POST", target, body(minimal_activity(500 + n)))
        assert answer.status == 200, answer
        assert answer.json() == {"id": 500 + n, "duplicate": False}
        assert "location" not in answer.headers
        assert log_leaks(deployment) == []
    activities, rejected = stored_counts(deployment.database_url)
    assert (activities, rejected) == (before[0] + 3, before[1])


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "//anything"),
        ("GET", f"//anything?token={TOKEN}"),
        ("POST", f"//anything?token={TOKEN}"),
        ("GET", "//evil.example/x"),
        ("POST", f"/webhooks/ninjarmm/activity/?token={TOKEN}"),
        ("POST", f"/webhooks//ninjarmm/activity/?token={TOKEN}"),
        ("GET", f"/alerts/?token={TOKEN}"),
        ("GET", "/metrics/"),
        ("GET", "/ui/static/dashboard.css/"),
        ("POST", f"/webhooks/ninjarmm/activity%3Ftoken={TOKEN}"),
        ("POST", f"/webhooks/ninjarmm/activity/x?token={TOKEN}"),
        ("POST", f"/./webhooks/ninjarmm/activity?token={TOKEN}"),
        ("POST", f"/webhooks/x/../ninjarmm/activity?token={TOKEN}"),
    ],
)
def test_odd_paths_answer_404_problem_without_redirect_or_token(
    deployment: Deployment, method: str, target: str
) -> None:
    before = stored_counts(deployment.database_url)
    answer = raw_request(deployment.url, method, target, body(minimal_activity(600)))
    assert_not_found_problem(answer)
    assert stored_counts(deployment.database_url) == before
    assert log_leaks(deployment) == []


@pytest.mark.parametrize(
    "query",
    [f"?a=1;token={TOKEN}", f"?token%3D{TOKEN}", f"?token='{TOKEN}'", f"?a=x%26token={TOKEN}"],
    ids=["semicolon", "encoded-equals", "quoted", "encoded-ampersand"],
)
def test_query_forms_the_server_refuses_are_not_logged(deployment: Deployment, query: str) -> None:
    answer = raw_request(deployment.url, "POST", INGEST_PATH + query, body(minimal_activity(700)))
    assert answer.status == 401, answer
    assert TOKEN.encode() not in answer.body
    assert log_leaks(deployment) == []


def test_the_docs_keep_their_trailing_slash(deployment: Deployment) -> None:
    assert raw_request(deployment.url, "GET", "/docs/").status == 200
    redirect = raw_request(deployment.url, "GET", f"/docs?token={TOKEN}")
    assert redirect.status in (307, 308)
    assert redirect.headers["location"] == "/docs/"  # relative, no query


def test_the_log_has_no_traceback_and_no_token(deployment: Deployment) -> None:
    # Last in the module: the log holds every request above.
    ok = httpx.get(
        f"{deployment.url}/activities/500", headers={"Authorization": f"Bearer {READ_TOKEN}"}
    )
    assert ok.status_code == 200
    deployment.stop()
    text = deployment.log.read_text(encoding="utf-8", errors="replace")
    assert "DEBUG" in text and "//anything" in text  # the access log was captured
    assert "Traceback" not in text
    assert " 500 " not in text
    assert [line for line in text.splitlines() if TOKEN in line or TOKEN[6:18] in line] == []


# The same through the in-process client on each backend, and the redaction itself.


def test_doubled_slash_in_process(client: Any) -> None:
    r = client.post(
        "/webhooks//ninjarmm/activity",
        content=body(minimal_activity(801)),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {WEBHOOK_TOKEN}"},
    )
    assert r.status_code == 200, r.text
    assert client.get("/activities/801", headers=API_HEADERS).status_code == 200
    r = client.get("/activities/", headers=API_HEADERS, follow_redirects=False)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


def test_redaction_rewrites_exception_arguments_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_redaction()
    log = logging.getLogger("connexion.middleware.exceptions.test")
    error = RuntimeError(f"redirect to http://evil.example/x?token={TOKEN}")
    with caplog.at_level(logging.DEBUG):
        log.warning("%r", error)
        log.info("%s", {"url": f"/x?a=1;token={TOKEN}"})
        log.info("/x?token=%s", TOKEN)
        try:
            raise error
        except RuntimeError:
            log.exception("failed")
        log.error(error)
    assert caplog.records
    for record in caplog.records:
        formatted = logging.Formatter("%(message)s").format(record)
        assert TOKEN not in formatted, formatted
    assert "[REDACTED]" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    "line",
    [
        f'"POST /webhooks/ninjarmm/activity?a=1;token={TOKEN} HTTP/1.1" 401',
        f'"POST /webhooks/ninjarmm/activity?token%3D{TOKEN} HTTP/1.1" 401',
        f"\"POST /webhooks/ninjarmm/activity?token='{TOKEN}' HTTP/1.1\" 401",
        f"GET /x?%74oken={TOKEN}",
        f"GET /x%3Ftoken={TOKEN}",
        f"GET /x?next=%2Fy%3Ftoken%3D{TOKEN}",
    ],
)
def test_redact_covers_every_query_form(line: str) -> None:
    redacted = redact(line)
    assert TOKEN not in redacted
    assert "[REDACTED]" in redacted
