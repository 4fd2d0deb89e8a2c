"""The notification lifecycle only moves forward (app.notifications.outbox.lifecycle_verdict):
for each route and alert, a destination gets the notification, then at most one "resolved",
in that order, whatever fails, is retried, replayed or arrives late.

Every interleaving runs against real destinations on loopback (a webhook server, a
Slack-shaped one, aiosmtpd), through the real ingest path and real workers, on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from email import message_from_bytes
from typing import Any

import pytest

from app.ingest.service import ingest_activity
from app.notifications.outbox import Worker
from app.notifications.reads import requeue_notifications, retry_dead_letters
from app.storage import notifications as store
from tests.support import (
    DestinationServer,
    body,
    condition_activity,
    condition_route_yaml,
    free_port,
    run_cli,
    settle_deliveries,
)

SERIES = "5b1e0d1c-0000-4000-8000-0000000011fe"


def routes_yaml(url: str, kind: str = "webhook", **options: Any) -> str:
    """One route ``pager`` for conditions, to one destination ``d``."""
    return condition_route_yaml(url, kind, slack_env="LIFECYCLE_SLACK_URL", **options)


def ingest(state: Any, activity_id: int, status: str, at: float, **extra: Any) -> None:
    payload = condition_activity(
        activity_id, status=status, series_uid=SERIES, activity_time=at, **extra
    )
    ingest_activity(state, body(payload), payload)


def attempt_due(state: Any) -> list[str]:
    """One worker round: claim what is due now and make one attempt at each; returns the
    events claimed, in order."""
    worker = Worker(state)
    try:
        rows = worker.claim(50)
        for row in rows:
            worker.deliver(row)
        return [row.event for row in rows]
    finally:
        worker.close()


def outbox(state: Any) -> dict[str, Any]:
    """The route's deliveries by event (one alert, one destination)."""
    with state.db.connect() as conn:
        rows = store.list_notifications(conn, store.NotificationFilter(), limit=100)
    return {row.event: row for row in rows}


def received(server: DestinationServer) -> list[str]:
    """The event of every request the destination received (failed attempts included), in
    arrival order."""
    return [p["event"] for p in server.payloads()]


def cli_env(settings: dict[str, Any]) -> dict[str, str]:
    return {
        "NINJAHOOK_DATABASE_URL": settings["database_url"],
        "NINJAHOOK_INSTANCE_PATH": settings["instance_path"],
    }


def test_a_dead_notification_holds_its_resolved_and_a_retry_after_the_reset_sends_nothing(
    make_state: Callable[..., Any], settings: dict[str, Any]
) -> None:
    """The issue's case: the destination answers 500 until the notification is a dead
    letter; the alert resets; `deliveries retry` later must not send a stale open."""
    destination = DestinationServer("error", status=500).start()
    try:
        state = make_state(routes_yaml(destination.url))
        now = time.time()
        ingest(state, 101, "TRIGGERED", now - 5)
        settle_deliveries(state)
        assert outbox(state)["notify"].status == "dead"
        attempts = len(destination.requests)
        assert attempts == 3 and received(destination) == ["notify"] * 3

        ingest(state, 102, "RESET", now - 1)
        settle_deliveries(state)
        resolved = outbox(state)["resolved"]
        # Held with its notification: a dead letter too, never sent.
        assert resolved.status == "dead" and resolved.last_error == store.HELD_WITH_NOTIFICATION
        assert len(destination.requests) == attempts

        destination.mode = "ok"
        result = run_cli(["deliveries", "retry", "--since", "1h"], env=cli_env(settings))
        assert result.exit_code == 0 and "2 dead letters queued again" in result.output
        settle_deliveries(state)
        rows = outbox(state)
        assert rows["notify"].status == "skipped"
        assert rows["notify"].last_error.startswith("resolved first")
        assert rows["resolved"].status == "skipped"
        assert "never delivered" in rows["resolved"].last_error
        # Nothing reached the destination: no stale open, no resolved without its open.
        assert len(destination.requests) == attempts
    finally:
        destination.stop()


def test_with_notify_resolved_late_the_retry_sends_one_summary(
    make_state: Callable[..., Any],
) -> None:
    destination = DestinationServer("error", status=500).start()
    try:
        state = make_state(routes_yaml(destination.url, notify_resolved_late="true"))
        now = time.time()
        ingest(state, 111, "TRIGGERED", now - 5)
        settle_deliveries(state)
        ingest(state, 112, "RESET", now - 1)
        settle_deliveries(state)
        failed = len(destination.requests)
        destination.mode = "ok"
        assert retry_dead_letters(state.db, store.NotificationFilter()) == 2
        settle_deliveries(state)
        late = destination.payloads()[failed:]
        assert [(p["event"], p["summary"]) for p in late] == [("resolved", True)]
        assert late[0]["title"].startswith("[RESOLVED] ")
        assert (
            "Triggered at" in late[0]["text"] and "before it could be notified" in late[0]["text"]
        )
        rows = outbox(state)
        assert rows["notify"].status == "skipped" and rows["resolved"].status == "delivered"
    finally:
        destination.stop()


def test_a_reset_during_retries_waits_and_follows_the_notification(
    make_state: Callable[..., Any],
) -> None:
    """The destination fails the first attempt; the RESET arrives while the notification
    waits for its retry: the notification goes first, then the resolved."""
    destination = DestinationServer("flaky").start()
    try:
        state = make_state(routes_yaml(destination.url))
        now = time.time()
        ingest(state, 121, "TRIGGERED", now - 5)
        assert attempt_due(state) == ["notify"]
        assert outbox(state)["notify"].status == "pending"
        destination.mode = "ok"
        ingest(state, 122, "RESET", now - 1)
        time.sleep(0.3)  # the retry is due (FAST_DELIVERY backoff)
        # The resolved is not claimable while its notification is pending.
        assert attempt_due(state) == ["notify"]
        assert attempt_due(state) == ["resolved"]
        assert received(destination) == ["notify", "notify", "resolved"]
        rows = outbox(state)
        assert rows["notify"].status == rows["resolved"].status == "delivered"
        assert destination.payloads()[-1]["refersTo"] == rows["notify"].uid
    finally:
        destination.stop()


def test_a_replay_never_reopens_a_resolved_alert(
    make_state: Callable[..., Any], settings: dict[str, Any]
) -> None:
    destination = DestinationServer().start()
    try:
        state = make_state(routes_yaml(destination.url))
        now = time.time()
        ingest(state, 131, "TRIGGERED", now - 5)
        settle_deliveries(state)
        ingest(state, 132, "RESET", now - 1)
        settle_deliveries(state)
        assert received(destination) == ["notify", "resolved"]

        result = run_cli(["deliveries", "replay", "--since", "1h"], env=cli_env(settings))
        assert result.exit_code == 0 and "2 deliveries queued again" in result.output
        settle_deliveries(state)
        # The open is not sent again; the resolved is, so the destination ends resolved.
        assert received(destination) == ["notify", "resolved", "resolved"]
        assert outbox(state)["notify"].status == "skipped"

        # Replaying the notification alone sends nothing at all.
        uid = outbox(state)["notify"].uid
        assert requeue_notifications(state.db, store.NotificationFilter(uid=uid)) == 1
        settle_deliveries(state)
        assert received(destination) == ["notify", "resolved", "resolved"]
    finally:
        destination.stop()


def test_a_retried_dead_notification_of_an_open_alert_goes_out_before_its_late_reset(
    make_state: Callable[..., Any],
) -> None:
    destination = DestinationServer("error", status=503).start()
    try:
        state = make_state(routes_yaml(destination.url))
        now = time.time()
        ingest(state, 141, "TRIGGERED", now - 5)
        settle_deliveries(state)
        failed = len(destination.requests)
        destination.mode = "ok"
        # The dashboard's retry button: one delivery by its id.
        uid = outbox(state)["notify"].uid
        assert retry_dead_letters(state.db, store.NotificationFilter(uid=uid)) == 1
        settle_deliveries(state)
        # The RESET arrives late (it happened before the retry went out) and resolves it.
        ingest(state, 142, "RESET", now - 2)
        settle_deliveries(state)
        assert received(destination)[failed:] == ["notify", "resolved"]
    finally:
        destination.stop()


def test_retrying_only_the_held_resolved_sends_nothing_before_its_notification(
    make_state: Callable[..., Any],
) -> None:
    destination = DestinationServer("error", status=500).start()
    try:
        state = make_state(routes_yaml(destination.url))
        now = time.time()
        ingest(state, 151, "TRIGGERED", now - 5)
        settle_deliveries(state)
        ingest(state, 152, "RESET", now - 1)
        settle_deliveries(state)
        destination.mode = "ok"
        sent = len(destination.requests)
        uid = outbox(state)["resolved"].uid
        assert retry_dead_letters(state.db, store.NotificationFilter(uid=uid)) == 1
        settle_deliveries(state)
        assert len(destination.requests) == sent
        assert outbox(state)["resolved"].status == "dead"
    finally:
        destination.stop()


def test_a_late_trigger_after_its_reset_sends_nothing(make_state: Callable[..., Any]) -> None:
    destination = DestinationServer().start()
    try:
        state = make_state(routes_yaml(destination.url))
        now = time.time()
        ingest(state, 162, "RESET", now - 2)
        ingest(state, 161, "TRIGGERED", now - 5)  # older than the RESET, arrives after it
        settle_deliveries(state)
        assert destination.requests == [] and outbox(state) == {}
    finally:
        destination.stop()


def test_an_alert_that_reopens_before_its_first_notification_went_out_sends_the_new_one(
    make_state: Callable[..., Any],
) -> None:
    destination = DestinationServer().start()
    try:
        state = make_state(routes_yaml(destination.url))
        now = time.time()
        ingest(state, 171, "TRIGGERED", now - 9)
        ingest(state, 172, "RESET", now - 6)
        ingest(state, 173, "TRIGGERED", now - 3)
        settle_deliveries(state)
        with state.db.connect() as conn:
            rows = store.list_notifications(conn, store.NotificationFilter(), limit=10)
        by_activity = {(r.activity_id, r.event): r for r in rows}
        assert by_activity[(171, "notify")].status == "skipped"
        assert by_activity[(171, "notify")].last_error.startswith("superseded")
        assert by_activity[(172, "resolved")].status == "skipped"
        assert by_activity[(173, "notify")].status == "delivered"
        assert [(p["event"], p["activity"]["id"]) for p in destination.payloads()] == [
            ("notify", 173)
        ]
    finally:
        destination.stop()


def test_a_destination_added_after_the_notification_gets_no_resolved(
    make_state: Callable[..., Any],
) -> None:
    """The routes file gains a destination while an alert is open: the RESET resolves the
    alert where it was notified, and the new destination hears nothing about it."""
    first = DestinationServer().start()
    added = DestinationServer().start()
    try:
        before = make_state(routes_yaml(first.url))
        now = time.time()
        ingest(before, 191, "TRIGGERED", now - 5)
        settle_deliveries(before)
        after = make_state(
            routes_yaml(first.url)
            .replace(
                "destinations:\n", f"destinations:\n  e: {{kind: webhook, url: '{added.url}'}}\n", 1
            )
            .replace("destinations: [d]", "destinations: [d, e]")
        )
        ingest(after, 192, "RESET", now - 1)
        settle_deliveries(after)
        assert received(first) == ["notify", "resolved"]
        assert added.requests == []
        with after.db.connect() as conn:
            rows = store.list_notifications(
                conn, store.NotificationFilter(destination="e"), limit=10
            )
        (row,) = rows
        assert row.event == "resolved" and row.status == "skipped"
        assert row.last_error == "no notification of this alert went to this destination"
    finally:
        first.stop()
        added.stop()


def test_two_workers_racing_keep_every_alerts_order(make_state: Callable[..., Any]) -> None:
    """Many alerts open and reset before any worker runs; two Worker instances (their
    own leases, four sends at a time each) race over the outbox. Every alert reaches the
    destination as notify, then resolved, each once."""
    destination = DestinationServer("slow", delay=0.02).start()
    try:
        state = make_state(routes_yaml(destination.url), delivery_concurrency="4")
        now = time.time()
        alerts = 12
        for n in range(alerts):
            series = f"5b1e0d1c-0000-4000-8000-{n:012d}"
            for activity_id, status, at in (
                (2000 + n, "TRIGGERED", now - 5),
                (3000 + n, "RESET", now - 2),
            ):
                payload = condition_activity(
                    activity_id, status=status, series_uid=series, activity_time=at
                )
                ingest_activity(state, body(payload), payload)
        workers = [Worker(state), Worker(state)]
        threads = [threading.Thread(target=w.run, kwargs={"drain": True}) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for worker in workers:
            worker.close()
        settle_deliveries(state)
        with state.db.connect() as conn:
            rows = store.list_notifications(conn, store.NotificationFilter(), limit=100)
        assert len(rows) == 2 * alerts and {r.status for r in rows} == {"delivered"}
        order: dict[str, list[str]] = {}
        for payload in destination.payloads():
            order.setdefault(payload["alert"]["key"], []).append(payload["event"])
        assert len(order) == alerts
        assert all(events == ["notify", "resolved"] for events in order.values()), order
    finally:
        destination.stop()


@pytest.mark.parametrize("kind", ["slack", "email"])
def test_slack_and_email_destinations_keep_the_lifecycle(
    make_state: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The same dead letter, reset, and retry against a Slack-shaped server and SMTP: the
    destination is down (nothing listens), comes back, and hears nothing stale."""
    port = free_port()
    if kind == "slack":
        monkeypatch.setenv("LIFECYCLE_SLACK_URL", f"http://127.0.0.1:{port}/services/T/B/x")
        state = make_state(routes_yaml("", kind="slack"))
    else:
        state = make_state(routes_yaml(f"127.0.0.1:{port}", kind="email"))
    now = time.time()
    ingest(state, 181, "TRIGGERED", now - 5)
    settle_deliveries(state)
    ingest(state, 182, "RESET", now - 1)
    settle_deliveries(state)
    rows = outbox(state)
    assert rows["notify"].status == "dead" and rows["resolved"].status == "dead"

    messages: list[Any] = []
    stop = _serve(kind, port, messages)
    try:
        assert retry_dead_letters(state.db, store.NotificationFilter()) == 2
        settle_deliveries(state)
        assert messages == []
        # A new alert on the same destination is notified and resolved, in that order.
        ingest(state, 183, "TRIGGERED", now - 0.5, seriesUid="other-series")
        settle_deliveries(state)
        ingest(state, 184, "RESET", now, seriesUid="other-series")
        settle_deliveries(state)
    finally:
        stop()
    assert [_state_of(kind, m) for m in messages] == ["open", "resolved"]


def _serve(kind: str, port: int, messages: list[Any]) -> Callable[[], None]:
    if kind == "slack":
        server = DestinationServer(port=port).start()

        def poll() -> None:
            messages[:] = server.payloads()

        def stop_slack() -> None:
            poll()
            server.stop()

        return stop_slack
    from aiosmtpd.controller import Controller

    class Mailbox:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            messages.append(message_from_bytes(envelope.content))
            return "250 OK"

    controller = Controller(Mailbox(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller.stop


def _state_of(kind: str, message: Any) -> str:
    title = message["blocks"][0]["text"]["text"] if kind == "slack" else message["Subject"]
    return "resolved" if title.startswith("[RESOLVED]") else "open"
