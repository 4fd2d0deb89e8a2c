"""Opsgenie (Alert API): one alert per NinjaOne alert, by alias, on a stand-in written
from Opsgenie's documentation: create, acknowledge, close, the EU and US hosts, the
answers (202, 401, 422, 429), and end to end through the outbox."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.notifications.destinations import Envelope
from app.notifications.reads import retry_dead_letters
from app.notifications.routes import RoutesError
from app.notifications.vendors import send
from app.storage import notifications as store
from tests.support import (
    FAST_DELIVERY,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    condition_activity,
    settle_deliveries,
)
from tests.support.vendor_fakes import OpsgenieFake, vendor_destination, vendor_message

SERIES_A = "5b1e0d1c-0000-4000-8000-0000000000a1"
SERIES_B = "5b1e0d1c-0000-4000-8000-0000000000b2"


@pytest.fixture
def opsgenie() -> Iterator[OpsgenieFake]:
    fake = OpsgenieFake().start()
    yield fake
    fake.stop()


def attempt(
    fake: OpsgenieFake, payload: dict[str, Any], event: str = "notify", key: str | None = None
) -> Any:
    destination = vendor_destination(
        f"{{kind: opsgenie, url: '{fake.url}', api_key_env: OG_KEY, tags: [msp]}}",
        {"OG_KEY": key or fake.api_key},
    )
    return send(
        destination, vendor_message(payload, event=event), Envelope("d-1"), route="r", timeout=3
    )


def test_create_carries_alias_priority_and_details(opsgenie: OpsgenieFake) -> None:
    assert attempt(opsgenie, condition_activity(1, series_uid=SERIES_A, severity="CRITICAL")).ok
    [alert] = opsgenie.alerts[SERIES_A]
    create = alert["create"]
    assert create["alias"] == SERIES_A
    assert create["priority"] == "P1"
    assert create["entity"] == "SRV-042"
    assert create["tags"] == ["msp"]
    assert create["details"]["organization"] == "Org 7"
    assert create["details"]["activityId"] == "1"
    assert len(create["message"]) <= 130


@pytest.mark.parametrize(
    ("severity", "priority"),
    [
        ("CRITICAL", "P1"),
        ("MAJOR", "P2"),
        ("MODERATE", "P3"),
        ("MINOR", "P4"),
        ("NONE", "P5"),
        (None, "P5"),
    ],
)
def test_priority_follows_the_documented_table(
    opsgenie: OpsgenieFake, severity: str | None, priority: str
) -> None:
    assert attempt(opsgenie, condition_activity(1, series_uid=SERIES_A, severity=severity)).ok
    assert opsgenie.alerts[SERIES_A][0]["create"]["priority"] == priority


def test_acknowledge_and_close_by_alias(opsgenie: OpsgenieFake) -> None:
    assert attempt(opsgenie, condition_activity(1, series_uid=SERIES_A)).ok
    assert attempt(
        opsgenie, condition_activity(2, series_uid=SERIES_A, status="ACKNOWLEDGED"), "acknowledge"
    ).ok
    assert opsgenie.state() == {SERIES_A: ["acked"]}
    assert attempt(
        opsgenie, condition_activity(3, series_uid=SERIES_A, status="RESET"), "resolved"
    ).ok
    assert opsgenie.state() == {SERIES_A: ["closed"]}
    assert opsgenie.failed == []
    paths = [r["path"] for r in opsgenie.requests]
    assert paths[1] == f"/v2/alerts/{SERIES_A}/acknowledge?identifierType=alias"
    assert paths[2] == f"/v2/alerts/{SERIES_A}/close?identifierType=alias"


def test_answers_map_to_outcomes(opsgenie: OpsgenieFake) -> None:
    payload = condition_activity(1, series_uid=SERIES_A)
    unauthorised = attempt(opsgenie, payload, key="wrong-key")
    assert (unauthorised.ok, unauthorised.permanent, unauthorised.status_code) == (False, True, 401)
    assert "wrong-key" not in (unauthorised.error or "")
    opsgenie.fail_next(429, retry_after="3")
    limited = attempt(opsgenie, payload)
    assert (limited.ok, limited.permanent, limited.retry_after) == (False, False, 3.0)
    opsgenie.fail_next(503)
    assert not attempt(opsgenie, payload).permanent
    assert opsgenie.alerts == {}
    assert attempt(opsgenie, payload).ok
    assert attempt(opsgenie, payload).ok  # a repeated create adds to the open alert
    assert opsgenie.state() == {SERIES_A: ["open"]}
    assert opsgenie.alerts[SERIES_A][0]["count"] == 2


def test_regions_pick_the_documented_hosts() -> None:
    us = vendor_destination("{kind: opsgenie, api_key_env: K}", {"K": "k"})
    eu = vendor_destination("{kind: opsgenie, api_key_env: K, region: eu}", {"K": "k"})
    assert us.vendor.url == "https://api.opsgenie.com"
    assert eu.vendor.url == "https://api.eu.opsgenie.com"
    with pytest.raises(RoutesError, match="region: expected us or eu"):
        vendor_destination("{kind: opsgenie, api_key_env: K, region: asia}", {"K": "k"})
    with pytest.raises(RoutesError, match="api_key: secrets are not written"):
        vendor_destination("{kind: opsgenie, api_key: abc}")


ROUTES = """\
destinations:
  og:
    kind: opsgenie
    url: {url}
    api_key_env: OG_KEY
routes:
  - name: incidents
    match:
      activityType: [CONDITION]
    notify_resolved_late: true
    destinations: [og]
"""


def test_outbox_end_to_end_one_alert_per_alert_across_an_outage_and_a_retry(
    make_app: Callable[..., Any],
    opsgenie: OpsgenieFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OG_KEY", opsgenie.api_key)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(url=opsgenie.url))
    app = make_app(routes_file=str(routes), **FAST_DELIVERY)
    state = app.app.extensions["ninjahook"]
    now = time.time()

    def post(payload: dict[str, Any]) -> None:
        assert client.post(INGEST_PATH, json=payload, headers=WEBHOOK_HEADERS).status_code == 200

    with app.test_client() as client:
        post(condition_activity(101, series_uid=SERIES_A, activity_time=now))
        post(
            condition_activity(
                102, series_uid=SERIES_A, status="ACKNOWLEDGED", activity_time=now + 1
            )
        )
        settle_deliveries(state)
        assert opsgenie.state() == {SERIES_A: ["acked"]}
        # Opsgenie is down while B triggers and both reset: dead letters.
        opsgenie.down = True
        post(condition_activity(201, series_uid=SERIES_B, activity_time=now + 2))
        post(condition_activity(103, series_uid=SERIES_A, status="RESET", activity_time=now + 3))
        post(condition_activity(202, series_uid=SERIES_B, status="RESET", activity_time=now + 4))
        settle_deliveries(state)
        assert opsgenie.state() == {SERIES_A: ["acked"]}
        opsgenie.down = False
        assert retry_dead_letters(state.db, store.NotificationFilter()) == 3
        settle_deliveries(state)
    # B was over before Opsgenie heard of it: notify_resolved_late sends it as a
    # create then a close, so it still ends as one closed alert.
    assert opsgenie.state() == {SERIES_A: ["closed"], SERIES_B: ["closed"]}
    assert opsgenie.failed == []
