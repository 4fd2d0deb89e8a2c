"""Hostile input against the production server: every case is a precise 4xx problem+json.

One gunicorn server (one worker, so "the worker stays up" means one pid) per backend
serves the whole module. After every case the worker is the same process and answers
/healthz, no activity was stored, and a rejected delivery was kept only when the
sender was authenticated and the answer was a 400.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.reliability.harness import rss_kib, stored_counts
from tests.support import (
    BACKENDS,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    WEBHOOK_TOKEN,
    GunicornServer,
    body,
    condition_activity,
    minimal_activity,
    scratch_database,
    start_gunicorn,
)

BODY_TIMEOUT = 2.0
# Growth of the worker's resident memory that a hostile request may cause, at most.
MEMORY_BOUND_KIB = 64 * 1024

AUTH_ONLY = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
UNAUTHENTICATED = {"Content-Type": "application/json"}


@dataclass
class Target:
    """The module's server, its database and its one worker."""

    server: GunicornServer
    database_url: str
    worker: int


@pytest.fixture(scope="module", params=BACKENDS)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("hostile")
    with scratch_database(request.param, tmp, "ninjahook_hostile") as url:
        server = start_gunicorn(
            url,
            tmp / "instance",
            workers=1,
            log_path=tmp / "gunicorn.log",
            NINJAHOOK_BODY_TIMEOUT=str(BODY_TIMEOUT),
        )
        try:
            yield Target(server, url, server.worker_pids()[0])
        finally:
            server.stop()


@pytest.fixture
def check(target: Target) -> Iterator[Any]:
    """Asserts a problem answer, and that nothing but a kept rejection was stored."""
    activities_before, rejected_before = stored_counts(target.database_url)

    def check_answer(r: httpx.Response, status: int, detail: str, *, kept: bool) -> None:
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json"), r.headers
        problem = r.json()
        assert problem["status"] == status
        assert detail in problem["detail"], problem
        activities, rejected = stored_counts(target.database_url)
        assert activities == activities_before
        assert rejected == rejected_before + (1 if kept else 0)

    yield check_answer
    # The worker survived the case and still serves.
    assert target.server.worker_pids() == [target.worker]
    assert httpx.get(target.server.url + "/healthz", timeout=5).status_code == 200


def post(target: Target, content: Any, headers: dict[str, str], **kw: Any) -> httpx.Response:
    return httpx.post(target.server.url + INGEST_PATH, content=content, headers=headers, **kw)


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b'{"id": 1, "message": "caf\xe9"}', "not valid UTF-8 (byte 25)"),
        (b'{"id": 1, "message": "\xed\xa0\x80"}', "not valid UTF-8"),  # a lone surrogate
        (b'{"id": NaN, "activityTime": 1}', "NaN is not valid JSON"),
        (b'{"id": 1, "activityTime": Infinity}', "Infinity is not valid JSON"),
        (b'{"id": 1, "activityTime": -Infinity}', "-Infinity is not valid JSON"),
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
        (
            body(minimal_activity(1))[:-1]
            + b',"extra":'
            + b'{"a":' * 10_000
            + b"1"
            + b"}" * 10_001,
            "nested too deeply",
        ),
        (b'{"id": 1, "id": 2, "activityTime": 1}', "duplicate key 'id'"),
        (
            json.dumps(minimal_activity(1)).encode()[:-1] + b', "data": {"x": 1}}',
            "duplicate key 'data'",
        ),
        (b"", "the request body is empty"),
        (b"   \r\n ", "the request body is empty"),
        (b'{"id": 1', "malformed JSON"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'"text"', "must be a JSON object, not str"),
        (b'{"id": 1, "activityTime": 1e400}', "activityTime: is not a finite number"),
        (b'{"id": 1, "activityTime": -1e400}', "activityTime: is not a finite number"),
        (b'{"id": 1, "data": {"x": [0, 1e999]}}', "data.x.1: is not a finite number"),
        (b'{"id": 1, "k\\u0000": 1, "k\\u0000": 2}', "duplicate key 'k\\x00'"),
    ],
    ids=[
        "latin-1-byte",
        "surrogate",
        "nan",
        "infinity",
        "minus-infinity",
        "10000-deep-array",
        "10000-deep-object-in-payload",
        "duplicate-id",
        "duplicate-data",
        "empty",
        "whitespace-only",
        "truncated",
        "array",
        "string",
        "overflowing-1e400",
        "overflowing-minus-1e400",
        "overflowing-nested",
        "duplicate-key-with-nul",
    ],
)
def test_malformed_body_is_400_kept_for_the_authenticated_sender(
    target: Target, check: Any, raw: bytes, detail: str
) -> None:
    check(post(target, raw, WEBHOOK_HEADERS), 400, detail, kept=True)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**minimal_activity(1), "id": 10**39}, "id"),
        ({**minimal_activity(1), "id": -(10**39)}, "id"),
        ({**minimal_activity(1), "deviceId": 10**39}, "deviceId"),
        (condition_activity(1, device_id=1234567890123456789012345678901234567890), "device"),
    ],
    ids=["id", "negative-id", "deviceId", "expanded-device"],
)
def test_40_digit_integers_are_400_naming_the_field(
    target: Target, check: Any, payload: dict[str, Any], field: str
) -> None:
    r = post(target, body(payload), WEBHOOK_HEADERS)
    check(r, 400, field, kept=True)
    assert r.json()["field"].startswith(field)


def test_integer_beyond_the_parsers_digit_limit_is_a_plain_400(target: Target, check: Any) -> None:
    r = post(target, b'{"id": ' + b"9" * 5000 + b"}", WEBHOOK_HEADERS)
    check(r, 400, "malformed JSON", kept=True)
    # Says what is wrong without pointing the sender at Python internals.
    assert "sys.set_int_max_str_digits" not in r.json()["detail"]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
def test_wrong_content_type_is_415(target: Target, check: Any, content_type: str) -> None:
    headers = {**AUTH_ONLY, "Content-Type": content_type}
    r = post(target, body(minimal_activity(1)), headers)
    check(r, 415, "Invalid Content-type", kept=False)


def test_missing_content_type_is_415(target: Target, check: Any) -> None:
    r = post(target, body(minimal_activity(1)), AUTH_ONLY)
    check(r, 415, "the Content-Type header is missing", kept=False)


def test_100_mb_streamed_without_content_length_is_413_in_bounded_memory(
    target: Target, check: Any
) -> None:
    before = rss_kib(target.worker)
    sent = 0

    def hundred_megabytes() -> Iterator[bytes]:
        nonlocal sent
        chunk = b" " * (1 << 20)
        for _ in range(100):
            sent += len(chunk)
            yield chunk

    try:
        r = post(target, hundred_megabytes(), WEBHOOK_HEADERS, timeout=60)
    except httpx.WriteError:
        pytest.fail("the server closed the connection without answering")
    assert "content-length" not in {k.lower() for k in r.request.headers}
    check(r, 413, "exceeds the limit of 1048576 bytes", kept=False)
    assert rss_kib(target.worker) - before < MEMORY_BOUND_KIB


def test_slow_drip_body_is_408_after_the_body_timeout(target: Target, check: Any) -> None:
    raw = body(minimal_activity(1))
    head = _request_head() + b"Content-Length: %d\r\n\r\n" % len(raw)
    with socket.create_connection(("127.0.0.1", target.server.port), timeout=30) as sock:
        sock.sendall(head)
        started = time.monotonic()
        # A byte every 50 ms: the whole body would take ~10 s; the limit is 2 s.
        for i in range(len(raw)):
            if select.select([sock], [], [], 0.05)[0]:
                break
            sock.sendall(raw[i : i + 1])
        answered = time.monotonic() - started
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert BODY_TIMEOUT <= answered < BODY_TIMEOUT + 2
    check(_parse_response(received), 408, f"within {BODY_TIMEOUT:g} seconds", kept=False)


def _raw_request(target: Target, head: bytes, payload: bytes) -> httpx.Response:
    """Send a hand-made request (more headers than httpx would send) and read the answer."""
    request = head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload
    with socket.create_connection(("127.0.0.1", target.server.port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return _parse_response(received)


def _parse_response(received: bytes) -> httpx.Response:
    head_part, _, content = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    headers = [
        (name.strip(), value.strip())
        for name, value in (line.split(":", 1) for line in header_lines)
    ]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=content)


def _request_head(*extra: bytes) -> bytes:
    return (
        b"POST " + INGEST_PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + WEBHOOK_TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n" + b"".join(extra)
    )


@pytest.mark.parametrize(
    ("extra", "detail"),
    [
        ([b"X-Flood-%d: a\r\n" % i for i in range(10_000)], "header fields; at most 100"),
        ([b"X-Big: " + b"a" * (1 << 20) + b"\r\n"], "'x-big' is longer than 8190 bytes"),
    ],
    ids=["10000-headers", "1-mb-header"],
)
def test_header_flood_is_431_in_bounded_memory(
    target: Target, check: Any, extra: list[bytes], detail: str
) -> None:
    before = rss_kib(target.worker)
    r = _raw_request(target, _request_head(*extra), body(minimal_activity(1)))
    check(r, 431, detail, kept=False)
    assert rss_kib(target.worker) - before < MEMORY_BOUND_KIB


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe", b'{"id": NaN}', b"[" * 10_000, b"", b'{"id": 1, "id": 1}'],
    ids=["utf8", "nan", "deep", "empty", "duplicate"],
)
def test_unauthenticated_hostile_body_is_401_and_never_kept(
    target: Target, check: Any, raw: bytes
) -> None:
    check(post(target, raw, UNAUTHENTICATED), 401, "No authorization token", kept=False)
    wrong = {**UNAUTHENTICATED, "Authorization": "Bearer not-the-token-0123456789"}
    check(post(target, raw, wrong), 401, "", kept=False)


def test_server_still_stores_a_valid_delivery_after_the_corpus(target: Target) -> None:
    # Runs last in this module: everything above left the worker able to ingest.
    r = post(target, body(condition_activity(5_555_001)), WEBHOOK_HEADERS)
    assert r.status_code == 200 and r.json() == {"id": 5_555_001, "duplicate": False}
    assert target.server.worker_pids() == [target.worker]


def test_log_holds_no_token_after_the_corpus(target: Target) -> None:
    assert target.server.log_path is not None
    log = target.server.log_path.read_text(errors="replace")
    assert "POST /webhooks/ninjarmm/activity" in log
    assert WEBHOOK_TOKEN not in log
