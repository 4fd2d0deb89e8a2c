"""Dashboard sessions: expiry, revocation at logout, CSRF on login and logout, headers.

Every test runs on each configured backend (``database_url``). Time is the module clock
of :mod:`app.web.sessions`, which the tests move by hand.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from app.config import load_config
from app.storage.tables import dashboard_sessions
from app.web import sessions
from tests.support import API_TOKEN

START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(sessions, "clock", fake)
    return fake


@pytest.fixture
def browser(make_app: Any, clock: Clock) -> Iterator[Any]:
    """A client of an app with an idle limit of 100 s and an absolute one of 1000 s."""
    app = make_app(session_idle="100s", session_max="1000s")
    with app.test_client() as client:
        yield client


def csrf_of(client: Any, path: str = "/") -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert match is not None
    return match.group(1)


def log_in(client: Any, **headers: str) -> str:
    r = client.post(
        "/login",
        data={"token": API_TOKEN, "csrf": csrf_of(client)},
        headers=headers,
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return str(client.cookies["ninjahook_session"])


def opens(client: Any, session: str) -> bool:
    """Whether ``session`` opens the read API (and the dashboard) on its own."""
    client.cookies.clear()
    reads = client.get("/alerts", headers={"Cookie": f"ninjahook_session={session}"})
    page = client.get("/", headers={"Cookie": f"ninjahook_session={session}"})
    assert (reads.status_code == 200) == ('action="/login"' not in page.text)
    return bool(reads.status_code == 200)


def test_session_settings_have_defaults_and_take_durations() -> None:
    config = load_config({})
    assert (config.session_idle, config.session_max) == (8 * 3600, 7 * 86400)
    config = load_config({"session_idle": "30m", "session_max": "2d"})
    assert (config.session_idle, config.session_max) == (1800, 172800)


def test_the_cookie_is_random_and_only_its_hash_is_stored(browser: Any, state: Any) -> None:
    first = log_in(browser)
    browser.cookies.clear()
    second = log_in(browser)
    assert first != second and len(first) >= 40
    with state.db.connect() as conn:
        stored = set(conn.execute(sa.select(dashboard_sessions.c.id_hash)).scalars())
    assert stored == {hashlib.sha256(s.encode()).hexdigest() for s in (first, second)}


def test_a_session_ends_when_idle_too_long(browser: Any, clock: Clock) -> None:
    session = log_in(browser)
    for _ in range(5):  # used every 90 s: never idle for 100 s
        clock.now += 90
        assert opens(browser, session)
    clock.now += 101
    assert not opens(browser, session)
    clock.now -= 101  # gone for good: the expired row was deleted
    assert not opens(browser, session)


def test_a_session_ends_at_its_absolute_limit_however_used(browser: Any, clock: Clock) -> None:
    session = log_in(browser)
    while clock.now + 50 < START + 1000:
        clock.now += 50
        assert opens(browser, session)
    clock.now = START + 1000
    assert not opens(browser, session)


def test_logout_revokes_the_session_everywhere(make_app: Any, clock: Clock) -> None:
    # Two apps on one database stand for two workers (or hosts).
    first, second = make_app(), make_app()
    with first.test_client() as a, second.test_client() as b:
        session = log_in(a)
        assert opens(b, session)
        a.cookies.set("ninjahook_session", session)
        r = a.post("/logout", data={"csrf": csrf_of(a)}, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["set-cookie"].startswith("ninjahook_session=;")
        assert "Max-Age=0" in r.headers["set-cookie"]
        # The old cookie, sent again, is refused on both.
        assert not opens(a, session)
        assert not opens(b, session)


@pytest.mark.parametrize(
    ("headers", "csrf"),
    [
        ({"Origin": "https://evil.example"}, "form"),
        ({"Sec-Fetch-Site": "cross-site"}, "form"),
        ({"Sec-Fetch-Site": "same-site", "Origin": "https://sub.testserver"}, "form"),
        ({}, ""),
        ({}, "forged"),
    ],
    ids=["other-origin", "cross-site", "same-site", "no-form-token", "forged-form-token"],
)
def test_a_login_from_elsewhere_is_refused(
    browser: Any, state: Any, headers: dict[str, str], csrf: str
) -> None:
    token = {"form": csrf_of(browser), "": "", "forged": "0" * 64}[csrf]
    r = browser.post(
        "/login", data={"token": API_TOKEN, "csrf": token}, headers=headers, follow_redirects=False
    )
    assert r.status_code == 403
    assert "ninjahook_session" not in r.headers.get("set-cookie", "")
    with state.db.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(dashboard_sessions)).scalar() == 0
        )


def test_a_login_without_the_pre_session_cookie_is_refused(browser: Any) -> None:
    csrf = csrf_of(browser)
    browser.cookies.clear()  # a page elsewhere cannot send the pre-session cookie
    r = browser.post("/login", data={"token": API_TOKEN, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 403


def test_a_same_origin_login_is_accepted(browser: Any) -> None:
    log_in(browser, **{"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"})


@pytest.mark.parametrize(
    ("headers", "forged"),
    [
        ({"Origin": "https://evil.example"}, False),
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({}, True),
    ],
    ids=["other-origin", "cross-site", "forged-form-token"],
)
def test_a_logout_from_elsewhere_is_refused(
    browser: Any, headers: dict[str, str], forged: bool
) -> None:
    session = log_in(browser)
    csrf = "0" * 64 if forged else csrf_of(browser)
    r = browser.post("/logout", data={"csrf": csrf}, headers=headers, follow_redirects=False)
    assert r.status_code == 403
    assert opens(browser, session)  # still logged in
    missing = browser.post(
        "/logout", headers={"Cookie": f"ninjahook_session={session}"}, follow_redirects=False
    )
    assert missing.status_code == 403
    assert opens(browser, session)


@pytest.mark.parametrize(
    ("method", "path", "logged_in"),
    [
        ("GET", "/", False),
        ("GET", "/", True),
        ("POST", "/login", False),
        ("POST", "/logout", True),
        ("GET", "/ui/live", True),
        ("GET", "/ui/live", False),
        ("GET", "/ui/activities/1", True),
        ("GET", "/ui/activities/1", False),
        ("GET", "/ui/dead-letters", True),
        ("GET", "/ui/static/dashboard.js", False),
    ],
)
def test_every_dashboard_answer_carries_the_security_headers(
    browser: Any, method: str, path: str, logged_in: bool
) -> None:
    if logged_in:
        log_in(browser)
    r = browser.request(method, path, follow_redirects=False)
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] in ("no-referrer", "same-origin")
    assert r.headers["x-frame-options"] == "DENY"


def test_the_pages_need_nothing_the_policy_forbids(browser: Any) -> None:
    log_in(browser)
    for path in ("/", "/ui/dead-letters"):
        page = browser.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=\"/)", page)  # no inline script
        assert " style=" not in page and "<style" not in page
        assert not re.search(r"\bon[a-z]+=", page)  # no inline event handlers
