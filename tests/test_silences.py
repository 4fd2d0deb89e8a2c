"""Silences (issue 14): an operator silences by device, organization, condition, alert
key or any route-match expression; the activity is stored and its notifications are
recorded as suppressed, with the silence, at real webhook, Slack-shaped and SMTP
destinations, on every backend."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    API_HEADERS,
    FAST_DELIVERY,
    WEBHOOK_HEADERS,
    DestinationServer,
    condition_activity,
    deliver,
    free_port,
    minimal_activity,
    run_cli,
    settle_deliveries,
)

OPERATOR_TOKEN = "op_alice_token_0123456789abcdef"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
CONDITION = "0c7ed5a2-4c28-4e9c-8b43-8d4d3b0f2f11"  # condition_activity's sourceConfigUid

ROUTES = """\
destinations:
  hook:
    kind: webhook
    url: {hook}
  chat:
    kind: slack
    url_env: TEST_SLACK_URL
  mail:
    kind: email
    host: 127.0.0.1
    port: {smtp_port}
    tls: none
    from: ninjahook@example.com
    to: noc@example.com
routes:
  - name: conditions
    once_per_alert: false
    match:
      activityType: [CONDITION]
    destinations: [hook, chat, mail]
"""


class Mailbox:
    """An SMTP server's handler that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(envelope.content)
        return "250 OK"

    def subjects(self) -> list[str]:
        with self.lock:
            return [str(message_from_bytes(m)["Subject"]) for m in self.messages]


class Destinations:
    """A webhook, a Slack-shaped webhook and an SMTP server, all on 127.0.0.1."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.hook = DestinationServer().start()
        self.chat = DestinationServer().start()
        self.mailbox = Mailbox()
        self.smtp = Controller(self.mailbox, hostname="127.0.0.1", port=free_port())
        self.smtp.start()

    def stop(self) -> None:
        self.hook.stop()
        self.chat.stop()
        self.smtp.stop()

    def counts(self) -> tuple[int, int, int]:
        """How many notifications each destination received."""
        return len(self.hook.payloads()), len(self.chat.payloads()), len(self.mailbox.messages)

    def hook_activity_ids(self) -> list[int]:
        return [p["activity"]["id"] for p in self.hook.payloads()]


@pytest.fixture
def destinations() -> Iterator[Destinations]:
    found = Destinations()
    yield found
    found.stop()


@pytest.fixture
def routed(
    make_app: Any, tmp_path: Path, destinations: Destinations, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The app with one route to the three destinations and an operator token."""
    monkeypatch.setenv("TEST_SLACK_URL", destinations.chat.url)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(hook=destinations.hook.url, smtp_port=destinations.smtp.port))
    return make_app(
        routes_file=str(routes), operator_tokens=f"alice:{OPERATOR_TOKEN}", **FAST_DELIVERY
    )


def _silence(client: Any, matchers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {"matchers": matchers, "comment": "planned work", "duration": "1h", **extra}
    r = client.post("/silences", json=body, headers=OPERATOR)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def _deliveries(client: Any, activity_id: int) -> list[dict[str, Any]]:
    r = client.get(f"/activities/{activity_id}/deliveries", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_a_silenced_device_is_stored_and_its_notifications_suppressed_everywhere(
    routed: Any, destinations: Destinations
) -> None:
    state = routed.app.extensions["ninjahook"]
    with routed.test_client() as client:
        silence = _silence(client, {"device": [42]})
        assert silence["createdBy"] == "alice"
        assert silence["state"] == "active"
        deliver(client, condition_activity(1, device_id=42))
        deliver(client, condition_activity(2, device_id=43))
        settle_deliveries(state)
        # Only device 43's notification went out, to each of the three destinations.
        assert destinations.counts() == (1, 1, 1)
        assert destinations.hook_activity_ids() == [2]
        assert "SRV-043" in destinations.mailbox.subjects()[0]
        assert "SRV-043" in json.dumps(destinations.chat.payloads()[0])
        # Device 42's activity is stored and shown, its notifications suppressed with why.
        assert client.get("/activities/1", headers=API_HEADERS).status_code == 200
        suppressed = _deliveries(client, 1)
        assert sorted(d["destination"] for d in suppressed) == ["chat", "hook", "mail"]
        for row in suppressed:
            assert row["status"] == "suppressed"
            assert row["silenceId"] == silence["id"]
            assert f"silence {silence['id']} by alice" in row["suppressedReason"]
            assert "planned work" in row["suppressedReason"]
            assert row["attempts"] == 0
        assert {d["status"] for d in _deliveries(client, 2)} == {"delivered"}
        listed = client.get("/deliveries?status=suppressed", headers=API_HEADERS).json()
        assert {d["activityId"] for d in listed["items"]} == {1}


@pytest.mark.parametrize(
    ("matchers", "silenced"),
    [
        ({"organization": [7]}, {1}),
        ({"organization": "org 8"}, {2}),  # by name, case-insensitive
        ({"sourceConfigUid": CONDITION}, {1}),
        ({"alertKey": "00000000-0000-0000-0000-000000000002"}, {2}),
        ({"sourceName": "^disk", "minSeverity": "CRITICAL"}, {2}),
        ({"device": 42, "sourceConfigUid": CONDITION}, {1}),
        ({"nodeClass": ["LINUX_SERVER"]}, set()),
    ],
)
def test_silences_match_by_organization_condition_alert_key_or_any_route_expression(
    routed: Any, destinations: Destinations, matchers: dict[str, Any], silenced: set[int]
) -> None:
    state = routed.app.extensions["ninjahook"]
    other_condition = "9a9a9a9a-0000-4000-8000-000000000000"
    with routed.test_client() as client:
        _silence(client, matchers)
        deliver(client, condition_activity(1, device_id=42, organization_id=7))
        deliver(
            client,
            condition_activity(
                2,
                device_id=43,
                organization_id=8,
                severity="CRITICAL",
                sourceConfigUid=other_condition,
            ),
        )
        settle_deliveries(state)
        assert set(destinations.hook_activity_ids()) == {1, 2} - silenced
        for activity_id in (1, 2):
            statuses = {d["status"] for d in _deliveries(client, activity_id)}
            assert statuses == ({"suppressed"} if activity_id in silenced else {"delivered"})


def test_a_silence_by_organization_uses_the_entity_cache_for_unexpanded_activities(
    routed: Any, destinations: Destinations
) -> None:
    """UI notification channels send no expansion: the cached device names the
    organization."""
    from tests.support import seed_entities

    state = routed.app.extensions["ninjahook"]
    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    with routed.test_client() as client:
        _silence(client, {"organization": "Org 7"})
        deliver(client, condition_activity(1, device_id=42, expand=False))
        settle_deliveries(state)
        assert destinations.counts() == (0, 0, 0)
        assert {d["status"] for d in _deliveries(client, 1)} == {"suppressed"}


def test_expiring_a_silence_lets_notifications_through_again(
    routed: Any, destinations: Destinations
) -> None:
    state = routed.app.extensions["ninjahook"]
    with routed.test_client() as client:
        silence = _silence(client, {"device": [42]})
        deliver(client, condition_activity(1, device_id=42))
        r = client.delete(f"/silences/{silence['id']}", headers=OPERATOR)
        assert r.status_code == 200, r.text
        expired = r.json()
        assert expired["state"] == "expired"
        assert expired["expiredBy"] == "alice"
        deliver(client, condition_activity(2, device_id=42))
        settle_deliveries(state)
        assert destinations.hook_activity_ids() == [2]
        assert destinations.counts() == (1, 1, 1)
        active = client.get("/silences?state=active", headers=API_HEADERS).json()["items"]
        assert active == []
        listed = client.get("/silences?state=expired", headers=API_HEADERS).json()["items"]
        assert [s["id"] for s in listed] == [silence["id"]]
        assert client.get(f"/silences/{silence['id']}", headers=API_HEADERS).json() == expired
        # Expiring again changes nothing; an unknown silence is a 404.
        again = client.delete(f"/silences/{silence['id']}", headers=OPERATOR).json()
        assert again["endsAt"] == expired["endsAt"]
        assert client.delete("/silences/999", headers=OPERATOR).status_code == 404
        actions = client.get("/operator-actions", headers=API_HEADERS).json()["items"]
        assert [(a["action"], a["actor"]) for a in actions] == [
            ("expire-silence", "alice"),
            ("silence", "alice"),
        ]


def test_a_pending_silence_suppresses_nothing_until_it_starts(
    routed: Any, destinations: Destinations
) -> None:
    state = routed.app.extensions["ninjahook"]
    with routed.test_client() as client:
        silence = _silence(client, {"device": [42]}, startsAt=str(time.time() + 3600))
        assert silence["state"] == "pending"
        deliver(client, condition_activity(1, device_id=42))
        settle_deliveries(state)
        assert destinations.hook_activity_ids() == [1]


def test_a_trigger_suppressed_by_a_silence_notifies_once_the_silence_is_over(
    make_app: Any, tmp_path: Path, destinations: Destinations
) -> None:
    """With once_per_alert, a silenced TRIGGERED does not count as notified: the next
    one after the silence notifies, and its RESET sends the resolved follow-up."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f"destinations:\n  hook: {{kind: webhook, url: '{destinations.hook.url}'}}\n"
        "routes:\n  - {name: alerts, match: {activityType: [CONDITION]}, destinations: [hook]}\n"
    )
    app = make_app(routes_file=str(routes), operator_tokens=OPERATOR_TOKEN, **FAST_DELIVERY)
    state = app.app.extensions["ninjahook"]
    series = "5e9b0c3c-1111-4222-8333-944445555666"
    with app.test_client() as client:
        silence = _silence(client, {"alertKey": series})
        assert silence["createdBy"].startswith("token-")  # no label: a hash, not the token
        assert OPERATOR_TOKEN not in json.dumps(silence)
        deliver(client, condition_activity(1, series_uid=series, activity_time=100.0))
        settle_deliveries(state)
        assert destinations.hook.payloads() == []
        assert client.delete(f"/silences/{silence['id']}", headers=OPERATOR).status_code == 200
        deliver(client, condition_activity(2, series_uid=series, activity_time=200.0))
        settle_deliveries(state)
        deliver(
            client, condition_activity(3, series_uid=series, status="RESET", activity_time=300.0)
        )
        settle_deliveries(state)
        events = [(p["activity"]["id"], p["event"]) for p in destinations.hook.payloads()]
        assert events == [(2, "notify"), (3, "resolved")]


def test_silences_refuse_what_would_be_a_mistake(routed: Any) -> None:
    with routed.test_client() as client:
        cases = [
            ({"matchers": {}, "comment": "x", "duration": "1h"}, "matchers"),
            ({"matchers": {"devise": 1}, "comment": "x", "duration": "1h"}, "devise"),
            ({"matchers": {"minSeverity": "HUGE"}, "comment": "x", "duration": "1h"}, "HUGE"),
            ({"matchers": {"message": "("}, "comment": "x", "duration": "1h"}, "regular"),
            ({"matchers": {"device": 1}, "comment": "x", "duration": "soon"}, "duration"),
            ({"matchers": {"device": 1}, "comment": "x"}, "endsAt or duration"),
            ({"matchers": {"device": 1}, "comment": " ", "duration": "1h"}, "comment"),
            (
                {"matchers": {"device": 1}, "comment": "x", "endsAt": "2001-01-01T00:00:00Z"},
                "future",
            ),
            ({"matchers": {"device": 1}, "comment": "x", "duration": "400d"}, "year"),
            ({"matchers": {"alertKey": ""}, "comment": "x", "duration": "1h"}, "alertKey"),
            ({"comment": "x", "duration": "1h"}, "matchers"),
            ({"matchers": {"device": 1}, "comment": "x", "duration": True}, "duration"),
            ({"matchers": {"device": 1}, "duration": "1h"}, "comment"),
        ]
        for body, named in cases:
            r = client.post("/silences", json=body, headers=OPERATOR)
            assert r.status_code == 400, (body, r.text)
            assert named in r.json()["detail"], (body, r.json())
        assert client.get("/silences", headers=API_HEADERS).json()["items"] == []
        # An operator's mistake is no rejected delivery from NinjaOne.
        assert client.get("/rejected", headers=API_HEADERS).json()["items"] == []


def test_only_operator_tokens_create_or_expire_silences(routed: Any) -> None:
    with routed.test_client() as client:
        body = {"matchers": {"device": 1}, "comment": "x", "duration": "1h"}
        for headers in (API_HEADERS, WEBHOOK_HEADERS, {}):
            assert client.post("/silences", json=body, headers=headers).status_code == 401
        silence = _silence(client, {"device": [1]})
        assert client.delete(f"/silences/{silence['id']}", headers=API_HEADERS).status_code == 401
        # Reading needs a read token, or an operator token (operators read too).
        assert client.get("/silences", headers=API_HEADERS).status_code == 200
        assert client.get("/silences", headers=OPERATOR).status_code == 200
        assert client.get("/silences").status_code == 401


def test_activities_outside_conditions_are_silenced_too(
    routed: Any, destinations: Destinations, make_app: Any, tmp_path: Path
) -> None:
    routes = tmp_path / "all.yaml"
    routes.write_text(
        f"destinations:\n  hook: {{kind: webhook, url: '{destinations.hook.url}'}}\n"
        "routes:\n  - {name: all, destinations: [hook]}\n"
    )
    app = make_app(routes_file=str(routes), operator_tokens=OPERATOR_TOKEN, **FAST_DELIVERY)
    state = app.app.extensions["ninjahook"]
    with app.test_client() as client:
        _silence(client, {"activityType": "SYSTEM"})
        deliver(client, minimal_activity(1, activityType="SYSTEM", statusCode="NODE_UPDATED"))
        deliver(client, minimal_activity(2, activityType="ACTION", statusCode="COMPLETED"))
        settle_deliveries(state)
        assert [p["activity"]["id"] for p in destinations.hook.payloads()] == [2]


def test_the_cli_adds_lists_and_expires_silences(
    routed: Any, destinations: Destinations, settings: dict[str, Any]
) -> None:
    env = {
        "NINJAHOOK_INSTANCE_PATH": settings["instance_path"],
        "NINJAHOOK_DATABASE_URL": settings["database_url"],
    }
    added = run_cli(
        [
            "silence",
            "add",
            "--device",
            "42",
            "--condition",
            CONDITION,
            "--duration",
            "4h",
            "--comment",
            "disk swap",
            "--author",
            "bob",
        ],
        env,
    )
    assert added.exit_code == 0, added.output
    assert added.output.startswith("silence 1 added, until ")
    listed = run_cli(["silence", "list", "--json"], env)
    assert listed.exit_code == 0, listed.output
    (silence,) = json.loads(listed.output)
    assert silence["matchers"] == {"device": [42], "sourceConfigUid": [CONDITION]}
    assert silence["createdBy"] == "bob"
    assert silence["comment"] == "disk swap"
    state = routed.app.extensions["ninjahook"]
    with routed.test_client() as client:
        deliver(client, condition_activity(1, device_id=42))
        expired = run_cli(["silence", "expire", "1", "--author", "bob"], env)
        assert expired.exit_code == 0, expired.output
        deliver(client, condition_activity(2, device_id=42))
        settle_deliveries(state)
    assert destinations.hook_activity_ids() == [2]
    assert json.loads(run_cli(["silence", "list", "--json"], env).output) == []
    bad = run_cli(["silence", "add", "--duration", "1h", "--comment", "x"], env)
    assert bad.exit_code == 1
    assert "at least one matcher" in bad.output
    missing = run_cli(["silence", "expire", "99"], env)
    assert missing.exit_code == 1
    assert "no silence with id 99" in missing.output


def test_a_method_a_path_lacks_is_answered_with_every_method_it_has(routed: Any) -> None:
    with routed.test_client() as client:
        for path, methods in (("/silences", {"GET", "POST"}), ("/silences/1", {"GET", "DELETE"})):
            r = client.request("PATCH", path, headers=OPERATOR)
            assert r.status_code == 405
            assert set(r.headers["allow"].replace(" ", "").split(",")) - {"HEAD"} == methods
