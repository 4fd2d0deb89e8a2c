"""Authentication against the production server, with its logs captured and searched.

gunicorn runs at log level DEBUG with the access log on, so every line the
server could write about a request is in the captured log. No token, right or
almost right, may appear in it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.reliability.harness import stored_counts
from tests.support import (
    BACKENDS,
    INGEST_PATH,
    GunicornServer,
    body,
    minimal_activity,
    scratch_database,
    start_gunicorn,
)

OLD_TOKEN = "whk_old_Q8f3LzT1mW0vR7yK"
NEW_TOKEN = "whk_new_J2c9XbN5pE4sH6dA"
READ_TOKEN = "api_read_V1g8MqZ3tU7wC0eF"
ALMOST = [
    NEW_TOKEN[:-1],  # one character short
    NEW_TOKEN + "A",  # one character long
    NEW_TOKEN[:-1] + "B",  # last character wrong
    "X" + NEW_TOKEN[1:],  # first character wrong
    NEW_TOKEN.upper(),
    NEW_TOKEN.swapcase(),
    f"{OLD_TOKEN},{NEW_TOKEN}",  # the configured list itself
    NEW_TOKEN + "\u00e9",  # a non-ASCII tail
]
SECRETS = [OLD_TOKEN, NEW_TOKEN, READ_TOKEN, *ALMOST]
JSON_TYPE = {"Content-Type": "application/json"}


@dataclass
class Deployment:
    """A gunicorn server with DEBUG logs going to ``log``; restartable with other tokens."""

    database_url: str
    instance: Path
    log: Path
    server: GunicornServer | None = None

    def start(self, webhook_tokens: str) -> GunicornServer:
        self.stop()
        self.server = start_gunicorn(
            self.database_url,
            self.instance,
            workers=1,
            log_path=self.log,
            NINJAHOOK_WEBHOOK_TOKENS=webhook_tokens,
            NINJAHOOK_API_TOKENS=READ_TOKEN,
            NINJAHOOK_LOG_LEVEL="debug",
        )
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("auth")
    with scratch_database(request.param, tmp, "ninjahook_auth") as url:
        dep = Deployment(url, tmp / "instance", tmp / "gunicorn.log")
        dep.start(f"{OLD_TOKEN},{NEW_TOKEN}")
        try:
            yield dep
        finally:
            dep.stop()


def ingest(dep: Deployment, activity_id: int, *, headers: dict[str, str], query: str = "") -> int:
    r = httpx.post(
        f"{dep.url}{INGEST_PATH}{query}",
        content=body(minimal_activity(activity_id)),
        headers={**JSON_TYPE, **headers},
    )
    if r.status_code == 401:
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 401
    return r.status_code


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"ninjahook_session={value}"}


def session_value(token: str) -> str:
    """The constant cookie value that sessions used to be (derived from the token); it
    must open nothing now."""
    return hmac.new(token.encode(), b"ninjahook-dashboard-session-v1", hashlib.sha256).hexdigest()


def read_session(dep: Deployment) -> str:
    """A dashboard session of the read token, through the login form as a browser gets it."""
    with httpx.Client(base_url=dep.url) as browser:
        form = browser.get("/")
        match = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert match is not None
        r = browser.post("/login", data={"token": READ_TOKEN, "csrf": match.group(1)})
        assert r.status_code == 303
        return str(r.cookies["ninjahook_session"])


READ_SESSION = "<a read session>"  # replaced by a live session of READ_TOKEN in the test


@pytest.mark.parametrize("token", ALMOST, ids=lambda t: f"almost-{ALMOST.index(t)}")
def test_almost_right_token_cannot_ingest_in_header_or_query(
    deployment: Deployment, token: str
) -> None:
    before = stored_counts(deployment.database_url)
    if token.isascii():
        assert ingest(deployment, 101, headers=bearer(token)) == 401
    query = httpx.QueryParams({"token": token})
    assert ingest(deployment, 102, headers={}, query=f"?{query}") == 401
    assert stored_counts(deployment.database_url) == before


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({}, ""),
        ({"Authorization": "Bearer"}, ""),
        ({"Authorization": NEW_TOKEN}, ""),  # no scheme
        ({"Authorization": f"Basic {NEW_TOKEN}"}, ""),
        ({"Authorization": f"Token {NEW_TOKEN}"}, ""),
        ({"X-Token": NEW_TOKEN}, ""),
        ({}, "?token="),
        ({}, f"?access_token={NEW_TOKEN}"),
        ({}, f"?Token={NEW_TOKEN}"),
        (cookie(READ_SESSION), ""),
        (cookie(session_value(READ_TOKEN)), ""),
        (bearer(READ_TOKEN), ""),  # a read token cannot ingest
        ({}, f"?token={READ_TOKEN}"),
    ],
    ids=[
        "missing",
        "empty-bearer",
        "no-scheme",
        "basic",
        "token-scheme",
        "other-header",
        "empty-query",
        "other-query-name",
        "capitalized-query-name",
        "read-session-cookie",
        "old-constant-read-cookie",
        "read-token-header",
        "read-token-query",
    ],
)
def test_missing_or_misplaced_token_cannot_ingest(
    deployment: Deployment, headers: dict[str, str], query: str
) -> None:
    if headers == cookie(READ_SESSION):
        headers = cookie(read_session(deployment))
    before = stored_counts(deployment.database_url)
    assert ingest(deployment, 103, headers=headers, query=query) == 401
    assert stored_counts(deployment.database_url) == before


def test_both_rotation_tokens_ingest_in_header_and_query(deployment: Deployment) -> None:
    assert ingest(deployment, 201, headers=bearer(OLD_TOKEN)) == 200
    assert ingest(deployment, 202, headers=bearer(NEW_TOKEN)) == 200
    assert ingest(deployment, 203, headers={}, query=f"?token={OLD_TOKEN}") == 200
    assert ingest(deployment, 204, headers={}, query=f"?token={NEW_TOKEN}") == 200


@pytest.mark.parametrize(
    "path", ["/activities", "/activities/201", "/activities/201/raw", "/rejected", "/metrics"]
)
def test_webhook_tokens_cannot_read(deployment: Deployment, path: str) -> None:
    url = deployment.url + path
    for token in (OLD_TOKEN, NEW_TOKEN):
        assert httpx.get(url, headers=bearer(token)).status_code == 401
        assert httpx.get(url, params={"token": token}).status_code == 401
        assert httpx.get(url, headers=cookie(token)).status_code == 401
        assert httpx.get(url, headers=cookie(session_value(token))).status_code == 401
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=bearer(READ_TOKEN[:-1])).status_code == 401
    assert httpx.get(url, headers=bearer(READ_TOKEN)).status_code == 200
    assert httpx.get(url, headers=cookie(read_session(deployment))).status_code == 200
    assert httpx.get(url, headers=cookie(session_value(READ_TOKEN))).status_code == 401


def test_rotation_removes_the_old_token(deployment: Deployment) -> None:
    # Runs after the tests above: the server restarts with only the new token.
    deployment.start(NEW_TOKEN)
    assert ingest(deployment, 301, headers=bearer(OLD_TOKEN)) == 401
    assert ingest(deployment, 302, headers={}, query=f"?token={OLD_TOKEN}") == 401
    assert ingest(deployment, 303, headers=bearer(NEW_TOKEN)) == 200
    assert ingest(deployment, 304, headers={}, query=f"?token={NEW_TOKEN}") == 200


def test_percent_encoded_query_token_name_is_not_logged(deployment: Deployment) -> None:
    # The server decodes "%74oken" to "token" and accepts it; the access log prints
    # the raw query, so redaction must compare decoded names too.
    assert ingest(deployment, 401, headers={}, query=f"?%74oken={NEW_TOKEN}") == 200
    assert ingest(deployment, 402, headers={}, query=f"?x=1&token={NEW_TOKEN}&y=2") == 200


def test_no_token_appears_in_any_log_line(deployment: Deployment) -> None:
    # Last in the module: the log holds everything the tests above sent.
    deployment.stop()
    text = deployment.log.read_text(encoding="utf-8", errors="replace")
    assert "POST /webhooks/ninjarmm/activity" in text  # the access log was captured
    assert " 401" in text and "DEBUG" in text
    leaks = [
        (secret, line)
        for line in text.splitlines()
        for secret in SECRETS
        if secret in line or str(httpx.QueryParams({"t": secret}))[2:] in line
    ]
    # A middle part of a token catches truncated or re-encoded leaks too.
    leaks += [
        (secret, line)
        for line in text.splitlines()
        for secret in (OLD_TOKEN, NEW_TOKEN, READ_TOKEN)
        if secret[6:18] in line
    ]
    assert leaks == [], leaks[:5]
