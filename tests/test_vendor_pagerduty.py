"""PagerDuty (Events API v2): one incident per alert on a stand-in written from
PagerDuty's documentation, through its answers (202, 400, 429, 5xx) and end to end
through the outbox: trigger, acknowledge, resolve, an outage and `deliveries retry`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.notifications.destinations import Envelope
from app.notifications.reads import retry_dead_letters
from app.notifications.vendors import send
from app.storage import notifications as store
from tests.support import (
    API_HEADERS,
    FAST_DELIVERY,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    condition_activity,
    settle_deliveries,
)
from tests.support.vendor_fakes import PagerDutyFake, vendor_destination, vendor_message

SERIES_A = "5b1e0d1c-0000-4000-8000-0000000000a1"
SERIES_B = "5b1e0d1c-0000-4000-8000-0000000000b2"
LINKS: dict[str, str | None] = {
    "alert": "https://hook.example/ui/alerts/a1",
    "device": "https://app.ninjarmm.com/#/deviceDashboard/42/overview",
}


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyFake]:
    fake = PagerDutyFake().start()
    yield fake
    fake.stop()


def destination_for(fake: PagerDutyFake, key: str | None = None) -> Any:
    return vendor_destination(
        f"{{kind: pagerduty, url: '{fake.url}', routing_key_env: PD_KEY}}",
        {"PD_KEY": key or fake.routing_key},
    )


def attempt(
    fake: PagerDutyFake, payload: dict[str, Any], event: str = "notify", key: str | None = None
) -> Any:
    return send(
        destination_for(fake, key),
        vendor_message(payload, event=event, links=LINKS),
        Envelope("delivery-1"),
        route="r",
        timeout=3,
    )


def test_a_trigger_carries_what_pagerduty_documents(pagerduty: PagerDutyFake) -> None:
    payload = condition_activity(
        1,
        series_uid=SERIES_A,
        activity_time=1764300000.5,
        device={"id": 42, "displayName": "SRV-01"},
        organization={"id": 7, "name": "Acme"},
    )
    assert attempt(pagerduty, payload).ok
    [incident] = pagerduty.incidents[SERIES_A]
    event = incident["trigger"]
    assert event["routing_key"] == pagerduty.routing_key
    assert event["dedup_key"] == SERIES_A
    body = event["payload"]
    assert body["severity"] == "error"  # MAJOR
    assert body["source"] == "SRV-01"
    assert body["component"] == "Disk Free Space < 10%"
    assert body["group"] == "Acme"
    assert body["class"] == "CONDITION"
    assert body["timestamp"].startswith("2025-11-28T03:20:00.5")
    assert body["custom_details"]["activity"]["id"] == 1
    assert body["custom_details"]["activity"]["seriesUid"] == SERIES_A
    assert [link["href"] for link in event["links"]] == [LINKS["alert"], LINKS["device"]]
    assert event["client_url"] == LINKS["alert"]


@pytest.mark.parametrize(
    ("ninjaone", "pagerduty_severity"),
    [
        ("CRITICAL", "critical"),
        ("MAJOR", "error"),
        ("MODERATE", "warning"),
        ("MINOR", "info"),
        ("NONE", "info"),
        (None, "info"),
    ],
)
def test_severity_follows_the_documented_table(
    pagerduty: PagerDutyFake, ninjaone: str | None, pagerduty_severity: str
) -> None:
    assert attempt(pagerduty, condition_activity(1, series_uid=SERIES_A, severity=ninjaone)).ok
    assert pagerduty.incidents[SERIES_A][0]["trigger"]["payload"]["severity"] == pagerduty_severity


def test_acknowledge_and_resolve_reach_the_same_incident(pagerduty: PagerDutyFake) -> None:
    assert attempt(pagerduty, condition_activity(1, series_uid=SERIES_A)).ok
    assert attempt(
        pagerduty, condition_activity(2, series_uid=SERIES_A, status="ACKNOWLEDGED"), "acknowledge"
    ).ok
    assert pagerduty.state() == {SERIES_A: ["acknowledged"]}
    assert attempt(
        pagerduty, condition_activity(3, series_uid=SERIES_A, status="RESET"), "resolved"
    ).ok
    assert pagerduty.state() == {SERIES_A: ["resolved"]}
    sent = [e["event_action"] for e in pagerduty.incidents[SERIES_A][0]["events"]]
    assert sent == ["trigger", "acknowledge", "resolve"]


def test_a_forwarded_reset_resolves_even_on_a_route_without_alert_lifecycle(
    pagerduty: PagerDutyFake,
) -> None:
    # once_per_alert: false sends every activity as "notify": the statusCode decides.
    assert attempt(pagerduty, condition_activity(1, series_uid=SERIES_A)).ok
    assert attempt(pagerduty, condition_activity(2, series_uid=SERIES_A, status="RESET")).ok
    assert pagerduty.state() == {SERIES_A: ["resolved"]}


def test_a_summary_of_an_alert_over_before_it_was_sent_opens_and_resolves_one_incident(
    pagerduty: PagerDutyFake,
) -> None:
    trigger = condition_activity(1, series_uid=SERIES_A)
    reset = condition_activity(2, series_uid=SERIES_A, status="RESET")
    outcome = send(
        destination_for(pagerduty),
        vendor_message(reset, event="resolved", trigger=trigger),
        Envelope("delivery-1"),
        route="r",
        timeout=3,
    )
    assert outcome.ok
    assert pagerduty.state() == {SERIES_A: ["resolved"]}
    assert (
        pagerduty.incidents[SERIES_A][0]["trigger"]["payload"]["custom_details"]["activity"]["id"]
        == 1
    )


def test_answers_map_to_outcomes_as_pagerduty_advises(pagerduty: PagerDutyFake) -> None:
    payload = condition_activity(1, series_uid=SERIES_A)
    invalid = attempt(pagerduty, payload, key="not-the-routing-key")
    assert (invalid.ok, invalid.permanent, invalid.status_code) == (False, True, 400)
    assert "not-the-routing-key" not in (invalid.error or "")
    pagerduty.fail_next(429, retry_after="7")
    throttled = attempt(pagerduty, payload)
    assert (throttled.ok, throttled.permanent, throttled.status_code) == (False, False, 429)
    assert throttled.retry_after == 7.0
    pagerduty.fail_next(502)
    failed = attempt(pagerduty, payload)
    assert (failed.ok, failed.permanent) == (False, False)
    assert pagerduty.incidents == {}
    assert attempt(pagerduty, payload).ok
    assert pagerduty.state() == {SERIES_A: ["triggered"]}


ROUTES = """\
destinations:
  pd:
    kind: pagerduty
    url: {url}
    routing_key_env: PD_ROUTING_KEY
routes:
  - name: incidents
    match:
      activityType: [CONDITION]
      statusCode: [TRIGGERED]
    notify_resolved_late: true
    destinations: [pd]
"""


def post(client: Any, payload: dict[str, Any]) -> None:
    assert client.post(INGEST_PATH, json=payload, headers=WEBHOOK_HEADERS).status_code == 200


def test_outbox_end_to_end_one_incident_per_alert_across_an_outage_and_a_retry(
    make_app: Callable[..., Any],
    pagerduty: PagerDutyFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PD_ROUTING_KEY", pagerduty.routing_key)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(url=pagerduty.url))
    app = make_app(routes_file=str(routes), **FAST_DELIVERY)
    state = app.app.extensions["ninjahook"]
    now = time.time()
    with app.test_client() as client:
        # A throttled first attempt is retried (Retry-After: 0).
        pagerduty.fail_next(429, retry_after="0")
        post(client, condition_activity(101, series_uid=SERIES_A, activity_time=now))
        settle_deliveries(state)
        assert pagerduty.state() == {SERIES_A: ["triggered"]}
        # The on-call engineer acknowledges in NinjaOne; the incident follows.
        post(
            client,
            condition_activity(
                102, series_uid=SERIES_A, status="ACKNOWLEDGED", activity_time=now + 1
            ),
        )
        settle_deliveries(state)
        assert pagerduty.state() == {SERIES_A: ["acknowledged"]}
        # PagerDuty goes down: B's trigger and A's reset become dead letters.
        pagerduty.down = True
        post(client, condition_activity(201, series_uid=SERIES_B, activity_time=now + 2))
        post(
            client,
            condition_activity(103, series_uid=SERIES_A, status="RESET", activity_time=now + 3),
        )
        settle_deliveries(state)
        with state.db.connect() as conn:
            dead = store.list_notifications(
                conn, store.NotificationFilter(statuses=(store.DEAD,)), limit=100
            )
        assert {(r.activity_id, r.event) for r in dead} == {(201, "notify"), (103, "resolved")}
        assert pagerduty.state() == {SERIES_A: ["acknowledged"]}
        # Back up; `deliveries retry` sends the dead letters again.
        pagerduty.down = False
        assert retry_dead_letters(state.db, store.NotificationFilter()) == 2
        settle_deliveries(state)
        assert pagerduty.state() == {SERIES_A: ["resolved"], SERIES_B: ["triggered"]}
        # A redelivered TRIGGERED of A (NinjaOne retries) opens nothing new.
        post(client, condition_activity(104, series_uid=SERIES_A, activity_time=now + 1))
        post(
            client,
            condition_activity(202, series_uid=SERIES_B, status="RESET", activity_time=now + 5),
        )
        settle_deliveries(state)
        # The read API lists the new kind and event (responses are validated).
        listed = client.get("/deliveries", headers=API_HEADERS)
        assert listed.status_code == 200, listed.text
        shown = {(d["activityId"], d["kind"], d["event"]) for d in listed.json()["items"]}
        assert (102, "pagerduty", "acknowledge") in shown
    assert pagerduty.state() == {SERIES_A: ["resolved"], SERIES_B: ["resolved"]}
    for key in (SERIES_A, SERIES_B):
        actions = [e["event_action"] for e in pagerduty.incidents[key][0]["events"]]
        assert actions[0] == "trigger" and actions[-1] == "resolve"
    with state.db.connect() as conn:
        rows = store.list_notifications(conn, store.NotificationFilter(), limit=100)
    assert {(r.activity_id, r.event, r.status) for r in rows} >= {
        (101, "notify", store.DELIVERED),
        (102, "acknowledge", store.DELIVERED),
        (103, "resolved", store.DELIVERED),
        (201, "notify", store.DELIVERED),
        (202, "resolved", store.DELIVERED),
    }
