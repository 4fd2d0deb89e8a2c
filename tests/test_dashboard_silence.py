"""In headless Chromium: an operator opens an alert's page, silences its condition on
its device for 1h, and the next TRIGGERED of that condition is stored but not sent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    API_HEADERS,
    FAST_DELIVERY,
    WEBHOOK_HEADERS,
    DestinationServer,
    body,
    condition_activity,
    live_server,
    one_route_file,
    settle_deliveries,
)
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

ALICE = "op_alice_token_0123456789abcdef"
SERIES = "6d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
def test_an_operator_silences_an_alert_from_its_page(make_app: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    destination = DestinationServer().start()
    app = make_app(
        routes_file=str(one_route_file(tmp_path, destination.url)),
        operator_tokens=f"alice:{ALICE}",
        **FAST_DELIVERY,
    )
    state = app.app.extensions["ninjahook"]
    try:
        with live_server(app) as server, sync_playwright() as pw:

            def post(payload: dict[str, Any]) -> None:
                r = httpx.post(
                    server.url + "/webhooks/ninjarmm/activity",
                    content=body(payload),
                    headers=WEBHOOK_HEADERS,
                )
                assert r.status_code == 200, r.text

            post(condition_activity(1, series_uid=SERIES, device_id=42, activity_time=100.0))
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(server.url + "/")
                page.fill("#token", ALICE)
                page.click("form.login button[type=submit]")
                page.wait_for_selector("#live")
                page.goto(f"{server.url}/ui/alerts/{SERIES}")
                expect(page.locator("#silences")).to_contain_text("No silence matches")
                page.fill("#silence-comment", "replacing the disk")
                page.click("form.silence-form button[value='1h']")
                page.wait_for_load_state()
                # Back on the alert's page (by its ref), which now shows the silence.
                assert "/ui/alerts/~" in page.url
                silence = page.locator("ul.silences li.silence")
                expect(silence).to_contain_text("replacing the disk")
                expect(silence.locator(".actor")).to_have_text("alice")
                expect(page.locator("#operator-actions")).to_contain_text("alice silence")

                # The silence is the alert's condition on its device, for an hour.
                listed = httpx.get(server.url + "/silences", headers=API_HEADERS).json()
                (created,) = listed["items"]
                assert created["matchers"] == {
                    "device": [42],
                    "sourceConfigUid": "0c7ed5a2-4c28-4e9c-8b43-8d4d3b0f2f11",
                }
                assert created["createdBy"] == "alice"
                assert created["state"] == "active"

                # The condition triggers again on that device (a new alert): stored and
                # shown with its silence, not sent.
                post(condition_activity(2, series_uid=None, device_id=42, activity_time=200.0))
                post(condition_activity(3, series_uid=None, device_id=43, activity_time=200.0))
                settle_deliveries(state)
                routed = httpx.get(server.url + "/activities/2/deliveries", headers=API_HEADERS)
                (suppressed,) = routed.json()["items"]
                assert suppressed["status"] == "suppressed"
                assert suppressed["silenceId"] == created["id"]
                page.goto(f"{server.url}/ui/activities/2")
                row = page.locator("tr.delivery.status-suppressed")
                expect(row).to_contain_text(f"silence {created['id']} by alice")
                expect(row).to_contain_text("replacing the disk")
            finally:
                browser.close()
        assert sorted(p["activity"]["id"] for p in destination.payloads()) == [1, 3]
    finally:
        destination.stop()
