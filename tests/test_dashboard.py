"""The dashboard: login, pages, the live fragment, and end to end in headless Chromium."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest

from app.auth import session_value
from tests.support import (
    API_TOKEN,
    ROOT,
    condition_activity,
    deliver,
    minimal_activity,
    seed_entities,
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


def logged_in(client: Any) -> Any:
    r = client.post("/login", data={"token": API_TOKEN}, follow_redirects=False)
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
    r = client.post("/login", data={"token": "not-the-token-at-all"}, follow_redirects=False)
    assert r.status_code == 401
    assert "not a read token" in r.text
    assert "set-cookie" not in r.headers


def test_login_sets_an_httponly_samesite_cookie_derived_from_the_token(client: Any) -> None:
    r = logged_in(client)
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"ninjahook_session={session_value(API_TOKEN)};")
    assert API_TOKEN not in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    # The cookie also opens the JSON read API.
    assert client.get("/alerts").status_code == 200
    r = client.post("/logout", follow_redirects=False)
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
    assert client.get("/ui/activities/999").status_code == 404


def test_payload_numbers_are_shown_exactly_as_received() -> None:
    from app.dashboard import pretty_json

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

    from tests.support import WEBHOOK_HEADERS, body

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
