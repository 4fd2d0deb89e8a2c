"""The dashboard: login, pages, the live fragment, and end to end in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.notifications import reads as service
from app.web import dashboard
from app.web.dashboard import form_token
from tests.support import (
    API_TOKEN,
    FAST_DELIVERY,
    ROOT,
    WEBHOOK_HEADERS,
    DestinationServer,
    body,
    condition_activity,
    deliver,
    live_server,
    minimal_activity,
    one_route_file,
    seed_entities,
    settle_deliveries,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"


def form_csrf(client: Any, path: str = "/") -> str:
    """The form token of the page at ``path`` (the login form's without a session, the
    logout form's with one), as a browser would post it."""
    match = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert match is not None
    return match.group(1)


# Operators may act (retry a dead letter); read tokens only see (issue 14, item 6).
OPERATOR_TOKEN = "op_dashboard_token_0123456789abcdef"


def logged_in(client: Any, token: str = API_TOKEN) -> Any:
    """Log in through the login form, as a browser does."""
    r = client.post(
        "/login", data={"token": token, "csrf": form_csrf(client)}, follow_redirects=False
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/"
    return r


def test_without_a_session_the_dashboard_is_the_login_form(client: Any) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert 'action="/login"' in r.text
    assert "Open alerts" not in r.text
    assert client.get("/ui/live").status_code == 401
    assert client.get("/ui/activities/1", follow_redirects=False).status_code == 303


def test_a_wrong_token_is_refused_with_the_form_again(client: Any) -> None:
    csrf = form_csrf(client)
    r = client.post(
        "/login", data={"token": "not-the-token-at-all", "csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 401
    assert "not a read token" in r.text
    assert "set-cookie" not in r.headers


def test_login_sets_an_httponly_samesite_cookie_holding_a_random_session(client: Any) -> None:
    r = logged_in(client)
    cookie = next(c for c in r.headers.get_list("set-cookie") if "ninjahook_session=" in c)
    value = cookie.removeprefix("ninjahook_session=").split(";")[0]
    assert len(value) >= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", value)
    assert API_TOKEN not in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    # The cookie also opens the JSON read API.
    assert client.get("/alerts").status_code == 200
    r = client.post("/logout", data={"csrf": form_csrf(client)}, follow_redirects=False)
    assert r.status_code == 303
    assert 'action="/login"' in client.get("/").text


def test_dashboard_groups_open_alerts_by_organization_with_severity_and_age(
    client: Any, state: Any
) -> None:
    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    seed_entities(state.db, organization_id=8, device_id=43, location_id=10)
    deliver(client, condition_activity(1, severity="CRITICAL", series_uid="disk"))
    deliver(
        client,
        condition_activity(2, organization_id=8, device_id=43, severity="MINOR", series_uid="cpu"),
    )
    deliver(client, minimal_activity(3, statusCode="SOMETHING_NEW"))
    logged_in(client)
    page = client.get("/").text
    assert page.index("Org 7") < page.index("Org 8")
    assert 'class="alert sev-critical" data-key="disk"' in page
    assert 'class="alert sev-minor" data-key="cpu"' in page
    assert "SRV-042" in page
    assert 'id="open-count">2<' in page
    assert 'id="drift-count">1<' in page
    assert 'data-id="3"' in page
    assert "<script" in page
    assert '<option value="7">Org 7</option>' in page
    filtered = client.get("/?organizationId=8").text
    assert '<option value="8" selected>Org 8</option>' in filtered
    assert 'data-key="cpu"' in filtered
    assert 'data-key="disk"' not in filtered
    live = client.get("/ui/live?severity=CRITICAL")
    assert live.status_code == 200
    assert 'data-key="disk"' in live.text
    assert 'data-key="cpu"' not in live.text
    assert "<html" not in live.text


def test_activity_page_pretty_prints_the_payload_escaped(client: Any) -> None:
    deliver(client, condition_activity(5, message="<b>bold</b> & co"))
    logged_in(client)
    r = client.get("/ui/activities/5")
    assert r.status_code == 200
    assert "\n  &#34;activityType&#34;: &#34;CONDITION&#34;," in r.text
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in r.text
    assert "<b>bold</b>" not in r.text
    assert "No route sent this activity anywhere." in r.text  # no routes configured
    assert client.get("/ui/activities/999").status_code == 404


def test_payload_numbers_are_shown_exactly_as_received() -> None:
    from app.web.dashboard import pretty_json

    raw = b'{"id":1,"activityTime":1764300000.123456789,"b":[],"a":{"x":[1,"\\u00e9",null]}}'
    assert pretty_json(raw) == (
        '{\n  "id": 1,\n  "activityTime": 1764300000.123456789,\n  "b": [],\n'
        '  "a": {\n    "x": [\n      1,\n      "é",\n      null\n    ]\n  }\n}'
    )


def test_alert_page_shows_the_history(client: Any) -> None:
    deliver(client, condition_activity(10, series_uid="mem", activity_time=1764300000))
    deliver(
        client, condition_activity(11, series_uid="mem", status="RESET", activity_time=1764300600)
    )
    logged_in(client)
    r = client.get("/ui/alerts/mem")
    assert r.status_code == 200
    assert r.text.index("TRIGGERED") < r.text.index("RESET")
    assert 'href="/ui/activities/11"' in r.text
    assert client.get("/ui/alerts/none-such").status_code == 404


def test_static_files_are_served(client: Any) -> None:
    css = client.get("/ui/static/dashboard.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "@media" in css.text
    assert client.get("/ui/static/other.js").status_code == 400


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
def test_end_to_end_in_headless_chromium(server: Any, state: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            page.goto(server.url + "/")
            page.fill("#token", API_TOKEN)
            page.click("button[type=submit]")
            expect(page.locator("#open-count")).to_have_text("0")
            page.evaluate("window.__sameDocument = true")

            delivered = condition_activity(
                77, severity="CRITICAL", series_uid="e2e-disk", message="C: has 3% free"
            )
            r = httpx.post(
                server.url + "/webhooks/ninjarmm/activity",
                content=body(delivered),
                headers=WEBHOOK_HEADERS,
            )
            assert r.status_code == 200
            alert = page.locator('li.alert[data-key="e2e-disk"]')
            expect(alert).to_be_visible(timeout=15_000)
            expect(page.locator("#open-count")).to_have_text("1")
            assert page.evaluate("window.__sameDocument") is True  # no reload happened
            assert "SRV-042" in alert.inner_text()
            page.screenshot(path=str(ARTIFACTS / "dashboard-live-alert.png"), full_page=True)

            page.locator('li.activity[data-id="77"] a').click()
            expect(page.locator("#payload")).to_contain_text('"seriesUid": "e2e-disk"')
            shown = json.loads(page.locator("#payload").inner_text())
            assert shown == delivered
            page.screenshot(path=str(ARTIFACTS / "dashboard-activity-detail.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "dashboard-live-alert.png").stat().st_size > 0


class RefusingPort:
    """A port that refuses connections until :meth:`release`: bound, never listening,
    so no server the test starts on a free port (the live server) can be given it."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.number: int = self._sock.getsockname()[1]

    def release(self) -> None:
        """Free the port, for a server the test starts on it."""
        self._sock.close()


@pytest.fixture
def down_port() -> Iterator[RefusingPort]:
    held = RefusingPort()
    yield held
    held.release()


def routed_to_a_down_destination(
    make_app: Any, tmp_path: Any, down: RefusingPort
) -> tuple[Any, int]:
    """An app routing every activity to a destination on ``down`` (which refuses
    connections), and its port number."""
    routes = one_route_file(tmp_path, f"http://127.0.0.1:{down.number}/hook")
    app = make_app(
        routes_file=str(routes), operator_tokens=f"ops:{OPERATOR_TOKEN}", **FAST_DELIVERY
    )
    return app, down.number


def delivery_ids(state: Any, activity_id: int) -> list[str]:
    return [d["id"] for d in service.activity_notifications(state, activity_id) or []]


def dead_ids(state: Any) -> list[str]:
    return [d["id"] for d in service.dead_letters(state)["items"]]


def test_activity_page_lists_its_deliveries_without_the_destination_url(
    make_app: Any, down_port: RefusingPort, tmp_path: Any
) -> None:
    app, port = routed_to_a_down_destination(make_app, tmp_path, down_port)
    state = app.app.extensions["ninjahook"]
    with app.test_client() as client:
        deliver(client, minimal_activity(61))
        deliver(client, minimal_activity(62))
        settle_deliveries(state)
        logged_in(client)
        page = client.get("/ui/activities/61").text
        (own,) = delivery_ids(state, 61)
        (other,) = delivery_ids(state, 62)
        assert f'<tr class="delivery status-dead" data-id="{own}">' in page
        assert f'data-id="{other}"' not in page
        assert "<td>all</td>" in page and "<td>d</td>" in page and "<td>webhook</td>" in page
        assert "<td>3</td>" in page  # attempts, FAST_DELIVERY's limit
        assert "ConnectError" in page
        assert str(port) not in page and "127.0.0.1" not in page
        assert 'href="/ui/dead-letters"' in page
        assert 'id="dead-count">2<' in client.get("/ui/live").text


def test_retry_needs_the_session_the_form_token_and_this_origin(
    make_app: Any, down_port: RefusingPort, tmp_path: Any
) -> None:
    app, _port = routed_to_a_down_destination(make_app, tmp_path, down_port)
    state = app.app.extensions["ninjahook"]
    with app.test_client() as client:
        deliver(client, minimal_activity(71))
        settle_deliveries(state)
        (dead,) = dead_ids(state)
        form = {"delivery": dead, "csrf": form_token("no-session-yet")}
        # No session: refused before anything else.
        r = client.post("/ui/dead-letters/retry", data=form, follow_redirects=False)
        assert r.status_code == 401
        assert client.get("/ui/dead-letters", follow_redirects=False).status_code == 303
        # A read session sees the dead letter but has no button, and a posted form is
        # refused: retrying is an operator's action.
        logged_in(client)
        form["csrf"] = form_token(client.cookies["ninjahook_session"])
        page = client.get("/ui/dead-letters").text
        assert 'id="dead-total">1<' in page and f'data-id="{dead}"' in page
        assert 'name="delivery"' not in page and "operator token" in page
        refused = client.post("/ui/dead-letters/retry", data=form, follow_redirects=False)
        assert refused.status_code == 403 and "operator token" in refused.text
        assert dead_ids(state) == [dead]
        client.cookies.clear()  # a fresh browser
        logged_in(client, OPERATOR_TOKEN)
        form["csrf"] = form_token(client.cookies["ninjahook_session"])
        page = client.get("/ui/dead-letters").text
        assert 'id="dead-total">1<' in page
        assert f'name="delivery" value="{dead}"' in page
        assert f'name="csrf" value="{form["csrf"]}"' in page
        # A form posted from another site, or with another session's token, changes nothing.
        evil = client.post(
            "/ui/dead-letters/retry",
            data=form,
            headers={"Origin": "https://evil.example"},
            follow_redirects=False,
        )
        assert evil.status_code == 403
        cross_site = client.post(
            "/ui/dead-letters/retry",
            data=form,
            headers={"Sec-Fetch-Site": "cross-site", "Origin": "null"},
            follow_redirects=False,
        )
        assert cross_site.status_code == 403
        forged = client.post(
            "/ui/dead-letters/retry",
            data={**form, "csrf": form_token("another-session")},
            follow_redirects=False,
        )
        assert forged.status_code == 403
        missing = client.post(
            "/ui/dead-letters/retry", data={"delivery": dead}, follow_redirects=False
        )
        assert missing.status_code == 400
        assert "csrf" in missing.text
        assert dead_ids(state) == [dead]

        r = client.post(
            "/ui/dead-letters/retry",
            data=form,
            headers={"Origin": "http://testserver"},
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/dead-letters?retried=1"
        assert dead_ids(state) == []
        (row,) = service.activity_notifications(state, 71) or []
        assert (row["status"], row["attempts"]) == ("pending", 0)
        assert "1 queued again" in client.get(r.headers["location"]).text
        # The same form again: it is no longer a dead letter.
        again = client.post("/ui/dead-letters/retry", data=form, follow_redirects=False)
        assert again.status_code == 404


def test_dead_letters_page_pages_back_through_older_ones(
    make_app: Any, down_port: RefusingPort, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _port = routed_to_a_down_destination(make_app, tmp_path, down_port)
    state = app.app.extensions["ninjahook"]
    monkeypatch.setattr(dashboard, "DEAD_LETTERS_SHOWN", 2)
    with app.test_client() as client:
        for n in range(81, 84):
            deliver(client, minimal_activity(n))
        settle_deliveries(state)
        logged_in(client)
        first = client.get("/ui/dead-letters").text
        assert 'id="dead-total">3<' in first
        assert first.count('class="delivery status-dead"') == 2
        older = service.dead_letters(state)["items"][1]["seq"]
        assert f'href="/ui/dead-letters?before={older}"' in first
        second = client.get(f"/ui/dead-letters?before={older}").text
        assert second.count('class="delivery status-dead"') == 1
        assert 'href="/ui/activities/81"' in second
        assert "?before=" not in second
        assert client.get("/ui/dead-letters?before=0").status_code == 400


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
def test_a_dead_letter_is_shown_and_retried_in_headless_chromium(
    make_app: Any, down_port: RefusingPort, tmp_path: Any
) -> None:
    from playwright.sync_api import expect, sync_playwright

    app, port = routed_to_a_down_destination(make_app, tmp_path, down_port)
    state = app.app.extensions["ninjahook"]
    ARTIFACTS.mkdir(exist_ok=True)
    with live_server(app) as server, sync_playwright() as pw:
        r = httpx.post(
            server.url + "/webhooks/ninjarmm/activity",
            content=body(minimal_activity(91)),
            headers=WEBHOOK_HEADERS,
        )
        assert r.status_code == 200
        settle_deliveries(state)  # every attempt at the down destination fails
        (dead,) = dead_ids(state)

        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url + "/")
            page.fill("#token", OPERATOR_TOKEN)
            page.click("button[type=submit]")
            expect(page.locator("#dead-count")).to_have_text("1")

            page.locator('li.activity[data-id="91"] a').click()
            row = page.locator(f'tr.delivery[data-id="{dead}"]')
            expect(row.locator("td.outcome")).to_have_text("dead")
            assert "ConnectError" in row.inner_text()
            assert str(port) not in page.content()
            page.screenshot(
                path=str(ARTIFACTS / "dashboard-activity-deliveries.png"), full_page=True
            )

            page.goto(server.url + "/")
            page.click("#dead-letters")
            expect(page.locator("#dead-total")).to_have_text("1")
            listed = page.locator(f'tr.delivery[data-id="{dead}"]')
            expect(listed).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "dashboard-dead-letters.png"), full_page=True)

            down_port.release()
            destination = DestinationServer(port=port).start()
            try:
                listed.locator("button", has_text="Retry").click()
                expect(page.locator(".notice")).to_contain_text("1 queued again")
                expect(page.locator("#dead-total")).to_have_text("0")
                settle_deliveries(state)
                assert destination.ids() == [dead]  # the same delivery id, sent once
                assert destination.payloads()[0]["activity"]["id"] == 91
            finally:
                destination.stop()

            page.goto(f"{server.url}/ui/activities/91")
            expect(page.locator(f'tr.delivery[data-id="{dead}"] td.outcome')).to_have_text(
                "delivered"
            )
            page.screenshot(path=str(ARTIFACTS / "dashboard-retried-delivery.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "dashboard-dead-letters.png").stat().st_size > 0
