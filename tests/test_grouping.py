"""Grouping (issue 14, item 5): a route's ``group_by`` and ``group_wait`` send the alerts
that open together in one group as one message listing them (a site losing power must
not send 200 messages); their "resolved" follow one by one, by the lifecycle rules.

Against real destinations on loopback (a webhook server, a Slack-shaped one, aiosmtpd),
through the real ingest path and real workers, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from email import message_from_bytes
from typing import Any

import pytest

from app.ingest.service import ingest_activity
from app.notifications.outbox import Worker
from app.notifications.routes import RoutesError, parse_routes
from app.storage import notifications as store
from tests.support import (
    DestinationServer,
    body,
    condition_activity,
    condition_route_yaml,
    free_port,
    settle_deliveries,
)


def routes_yaml(url: str, kind: str = "webhook", group: str = "[organization]") -> str:
    return condition_route_yaml(
        url, kind, route="site", slack_env="GROUPING_SLACK_URL", group_by=group, group_wait="1s"
    )


def series(n: int) -> str:
    return f"5b1e0d1c-0000-4000-8000-{n:012d}"


def open_alert(state: Any, n: int, organization_id: int = 7, status: str = "TRIGGERED") -> None:
    payload = condition_activity(
        (1 if status == "TRIGGERED" else 2) * 100000 + n,
        status=status,
        series_uid=series(n),
        device_id=1000 + n,
        organization_id=organization_id,
        activity_time=time.time(),
    )
    ingest_activity(state, body(payload), payload)


def rows(state: Any) -> list[Any]:
    with state.db.connect() as conn:
        return store.list_notifications(conn, store.NotificationFilter(), limit=500)[::-1]


def claimable_now(state: Any) -> list[str]:
    worker = Worker(state)
    try:
        return [row.event for row in worker.claim(50)]
    finally:
        worker.close()


def test_alerts_opening_together_go_out_as_one_message_and_resolve_one_by_one(
    make_state: Callable[..., Any],
) -> None:
    destination = DestinationServer().start()
    try:
        state = make_state(routes_yaml(destination.url))
        for n in range(5):
            open_alert(state, n)
        open_alert(state, 9, organization_id=8)
        assert claimable_now(state) == []  # the group waits
        settle_deliveries(state)
        sent = destination.payloads()
        assert len(sent) == 2, [p["title"] for p in sent]
        grouped = next(p for p in sent if p["title"].startswith("[5 alerts] "))
        single = next(p for p in sent if p is not grouped)
        assert grouped["title"] == "[5 alerts] Org 7, Site 9"
        lines = grouped["text"].split("\n")
        assert len(lines) == 5 and all(line.startswith("• [MAJOR] ") for line in lines)
        assert sorted(lines) == [
            f"• [MAJOR] Disk Free Space < 10% on SRV-{1000 + n}" for n in range(5)
        ]
        assert single["title"].startswith("[MAJOR] ") and single["alert"]["key"] == series(9)
        notifies = [r for r in rows(state) if r.event == "notify"]
        assert {r.status for r in notifies} == {"delivered"} and len(notifies) == 6
        group_uids = {r.uid for r in notifies if r.activity_id != 100009}
        assert grouped["id"] in group_uids

        # Two of the group reset: each "resolved" refers to its own notification.
        open_alert(state, 1, status="RESET")
        open_alert(state, 3, status="RESET")
        settle_deliveries(state)
        resolved = [p for p in destination.payloads() if p["event"] == "resolved"]
        assert sorted(p["alert"]["key"] for p in resolved) == [series(1), series(3)]
        by_activity = {r.activity_id: r.uid for r in notifies}
        assert {p["refersTo"] for p in resolved} == {by_activity[100001], by_activity[100003]}
        # A new alert of the same organization later is a new group of its own.
        open_alert(state, 20)
        settle_deliveries(state)
        assert destination.payloads()[-1]["title"].startswith("[MAJOR] ")
    finally:
        destination.stop()


def test_a_failed_group_is_retried_whole(make_state: Callable[..., Any]) -> None:
    destination = DestinationServer("flaky").start()
    try:
        state = make_state(routes_yaml(destination.url))
        for n in range(3):
            open_alert(state, n)
        settle_deliveries(state)
        sent = destination.payloads()
        assert [p["title"] for p in sent] == ["[3 alerts] Org 7, Site 9"] * 2
        assert sent[0]["id"] == sent[1]["id"]  # the same message, retried
        notifies = [r for r in rows(state) if r.event == "notify"]
        assert {r.status for r in notifies} == {"delivered"}
        assert {r.attempts for r in notifies} == {2}
    finally:
        destination.stop()


def test_two_workers_racing_never_split_a_group(make_state: Callable[..., Any]) -> None:
    destination = DestinationServer("slow", delay=0.02).start()
    try:
        state = make_state(routes_yaml(destination.url), delivery_concurrency="4")
        for n in range(24):
            open_alert(state, n, organization_id=7 + n % 2)
        time.sleep(1.1)
        workers = [Worker(state), Worker(state)]
        threads = [threading.Thread(target=w.run, kwargs={"drain": True}) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for worker in workers:
            worker.close()
        settle_deliveries(state)
        titles = sorted(p["title"] for p in destination.payloads())
        assert titles == ["[12 alerts] Org 7, Site 9", "[12 alerts] Org 8, Site 9"]
        assert {r.status for r in rows(state)} == {"delivered"}
    finally:
        destination.stop()


@pytest.mark.parametrize("kind", ["slack", "email"])
def test_slack_and_email_get_one_message_per_group(
    make_state: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    port = free_port()
    messages: list[Any] = []
    if kind == "slack":
        monkeypatch.setenv("GROUPING_SLACK_URL", f"http://127.0.0.1:{port}/services/T/B/x")
        state = make_state(routes_yaml("", kind="slack"))
        server = DestinationServer(port=port).start()

        def stop() -> None:
            messages[:] = server.payloads()
            server.stop()
    else:
        from aiosmtpd.controller import Controller

        class Mailbox:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        controller = Controller(Mailbox(), hostname="127.0.0.1", port=port)
        controller.start()
        stop = controller.stop
        state = make_state(routes_yaml(f"127.0.0.1:{port}", kind="email"))
    try:
        for n in range(3):
            open_alert(state, n)
        settle_deliveries(state)
    finally:
        stop()
    assert len(messages) == 1
    message = messages[0]
    if kind == "slack":
        assert message["blocks"][0]["text"]["text"] == "[3 alerts] Org 7, Site 9"
        assert str(message).count("[MAJOR]") >= 3
    else:
        assert message["Subject"] == "[3 alerts] Org 7, Site 9"
        text = message.get_payload(decode=True) if not message.is_multipart() else b""
        parts = [text] + [
            p.get_payload(decode=True) for p in message.walk() if not p.is_multipart()
        ]
        assert any(b"[MAJOR]" in (p or b"") for p in parts)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ("    group_by: [site]\n", "group_by: unknown key 'site'"),
        ("    group_wait: 30s\n", "group_wait: needs group_by"),
        ("    group_by: [organization]\n    group_wait: soon\n", "group_wait: expected a duration"),
    ],
)
def test_bad_grouping_options_are_errors_naming_the_line(options: str, error: str) -> None:
    text = (
        "destinations:\n  d: {kind: webhook, url: 'http://127.0.0.1:9/hook'}\n"
        "routes:\n  - name: site\n    destinations: [d]\n" + options
    )
    with pytest.raises(RoutesError, match=r"routes\.yaml:\d+: .*" + re.escape(error)):
        parse_routes(text, "routes.yaml", environ={})


def test_group_wait_defaults_to_thirty_seconds() -> None:
    routes = parse_routes(
        "destinations:\n  d: {kind: webhook, url: 'http://127.0.0.1:9/hook'}\n"
        "routes:\n  - {name: site, destinations: [d], group_by: [organization, location]}\n",
        "routes.yaml",
        environ={},
    )
    route = routes.routes[0]
    assert (route.group_by, route.group_wait) == (("organization", "location"), 30.0)
