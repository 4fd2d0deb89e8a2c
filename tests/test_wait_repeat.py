"""A route's ``wait`` and ``repeat`` (issue 14, item 5): a notification waits before it
goes out and is sent only if its alert is still open then; an alert that stays open is
reminded every ``repeat``. Both run in the delivery worker, not in ingest.

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

SERIES = "5b1e0d1c-0000-4000-8000-00000000a17e"
HOUR = 3600.0


def routes_yaml(url: str, kind: str = "webhook", **options: Any) -> str:
    """One route ``pager`` for conditions, to one destination ``d``."""
    return condition_route_yaml(url, kind, slack_env="WAIT_REPEAT_SLACK_URL", **options)


def ingest(state: Any, activity_id: int, status: str, at: float, **extra: Any) -> None:
    payload = condition_activity(
        activity_id, status=status, series_uid=SERIES, activity_time=at, **extra
    )
    ingest_activity(state, body(payload), payload)


def outbox(state: Any) -> dict[str, Any]:
    """The route's deliveries by event (one alert, one destination)."""
    with state.db.connect() as conn:
        rows = store.list_notifications(conn, store.NotificationFilter(), limit=200)
    return {row.event: row for row in rows}


def remind(state: Any, at: float) -> int:
    """One reminder scan as a worker makes it, with the clock at ``at``."""
    worker = Worker(state)
    try:
        return worker.enqueue_reminders(now=at)
    finally:
        worker.close()


def claimable_now(state: Any) -> list[str]:
    """The events a worker could claim now (claimed, then left to the lease)."""
    worker = Worker(state)
    try:
        return [row.event for row in worker.claim(50)]
    finally:
        worker.close()


def events(server: DestinationServer) -> list[str]:
    return [p["event"] for p in server.payloads()]


def test_a_reset_inside_the_wait_sends_nothing_at_all(make_state: Callable[..., Any]) -> None:
    destination = DestinationServer().start()
    try:
        state = make_state(routes_yaml(destination.url, wait="1s"))
        now = time.time()
        ingest(state, 501, "TRIGGERED", now - 0.2)
        assert claimable_now(state) == []  # not due before the wait is over
        ingest(state, 502, "RESET", now)
        assert claimable_now(state) == []  # the resolved waits behind its notification
        time.sleep(1.1)
        settle_deliveries(state)
        rows = outbox(state)
        assert rows["notify"].status == "skipped"
        assert rows["notify"].last_error.startswith("reset within wait")
        assert rows["resolved"].status == "skipped"
        assert destination.requests == []
    finally:
        destination.stop()


def test_an_alert_still_open_after_the_wait_is_notified_then_resolved(
    make_state: Callable[..., Any],
) -> None:
    destination = DestinationServer().start()
    try:
        state = make_state(routes_yaml(destination.url, wait="1s"))
        now = time.time()
        ingest(state, 511, "TRIGGERED", now - 0.2)
        notify = outbox(state)["notify"]
        assert notify.next_attempt_at == pytest.approx(notify.created_at + 1.0)
        assert claimable_now(state) == []
        settle_deliveries(state)  # waits for the notification to be due, then sends it
        assert events(destination) == ["notify"]
        assert outbox(state)["notify"].delivered_at >= notify.created_at + 1.0
        assert destination.payloads()[0]["alert"]["state"] == "open"
        ingest(state, 512, "RESET", time.time())
        settle_deliveries(state)
        assert events(destination) == ["notify", "resolved"]
    finally:
        destination.stop()


def test_an_open_alert_is_reminded_every_repeat_until_it_resets(
    make_state: Callable[..., Any],
) -> None:
    destination = DestinationServer().start()
    try:
        state = make_state(routes_yaml(destination.url, repeat="1h"))
        now = time.time()
        ingest(state, 521, "TRIGGERED", now - 1)
        # Repeats of the condition do not notify again, and do not move the reminder.
        ingest(state, 523, "TRIGGERED", now - 0.5)
        settle_deliveries(state)
        assert events(destination) == ["notify"]
        notify = outbox(state)["notify"]
        assert remind(state, notify.delivered_at + HOUR - 5) == 0  # not due yet
        assert remind(state, notify.delivered_at + HOUR + 1) == 1
        assert remind(state, notify.delivered_at + HOUR + 2) == 0  # the next is an hour on
        settle_deliveries(state)
        assert remind(state, notify.delivered_at + 2 * HOUR + 2) == 1
        settle_deliveries(state)
        sent = destination.payloads()
        assert [p["event"] for p in sent] == ["notify", "reminder", "reminder"]
        first, second = sent[1], sent[2]
        assert first["title"].startswith("[REMINDER] ")
        assert first["title"].removeprefix("[REMINDER] ") == sent[0]["title"].split("] ", 1)[1]
        assert first["text"].startswith("Still open (reminder 1): ")
        assert second["text"].startswith("Still open (reminder 2): ")
        assert first["refersTo"] == second["refersTo"] == notify.uid
        assert first["id"] != second["id"]
        assert first["alert"]["state"] == "open"

        ingest(state, 522, "RESET", time.time())
        settle_deliveries(state)
        assert remind(state, notify.delivered_at + 10 * HOUR) == 0
        settle_deliveries(state)
        assert events(destination) == ["notify", "reminder", "reminder", "resolved"]
    finally:
        destination.stop()


def test_a_reminder_due_when_the_alert_resets_is_not_sent(
    make_state: Callable[..., Any],
) -> None:
    destination = DestinationServer().start()
    try:
        state = make_state(routes_yaml(destination.url, repeat="1h"))
        now = time.time()
        ingest(state, 531, "TRIGGERED", now - 1)
        settle_deliveries(state)
        notify = outbox(state)["notify"]
        assert remind(state, notify.delivered_at + HOUR + 1) == 1
        ingest(state, 532, "RESET", now)  # before any worker took the reminder
        settle_deliveries(state)
        rows = outbox(state)
        assert rows["reminder 1"].status == "skipped"
        assert rows["reminder 1"].last_error.startswith("no reminder")
        assert events(destination) == ["notify", "resolved"]
        # Triggered again: a new alert, notified, and reminded from its own notification.
        ingest(state, 533, "TRIGGERED", time.time())
        settle_deliveries(state)
        again = {r.activity_id: r for r in _rows(state) if r.event == "notify"}[533]
        assert remind(state, again.delivered_at + HOUR - 1) == 0  # its own hour
        assert remind(state, again.delivered_at + HOUR + 1) == 1
        settle_deliveries(state)
        assert events(destination) == ["notify", "resolved", "notify", "reminder"]
        assert destination.payloads()[-1]["refersTo"] == again.uid
    finally:
        destination.stop()


def test_a_failed_notification_gets_no_reminders(make_state: Callable[..., Any]) -> None:
    destination = DestinationServer("error", status=500).start()
    try:
        state = make_state(routes_yaml(destination.url, repeat="1h"))
        ingest(state, 541, "TRIGGERED", time.time() - 1)
        settle_deliveries(state)
        assert outbox(state)["notify"].status == "dead"
        assert remind(state, time.time() + 10 * HOUR) == 0
    finally:
        destination.stop()


def test_two_workers_racing_send_each_reminder_once_and_in_order(
    make_state: Callable[..., Any],
) -> None:
    """Many alerts open; two workers scan for reminders at once and deliver concurrently;
    each alert gets notify, exactly one reminder, then resolved."""
    destination = DestinationServer("slow", delay=0.02).start()
    try:
        state = make_state(
            routes_yaml(destination.url, repeat="1h", wait="1s"), delivery_concurrency="4"
        )
        alerts = 10
        now = time.time()
        for n in range(alerts):
            payload = condition_activity(
                6000 + n,
                status="TRIGGERED",
                series_uid=f"5b1e0d1c-0000-4000-8000-{n:012d}",
                activity_time=now - 2,
            )
            ingest_activity(state, body(payload), payload)
        time.sleep(1.1)
        _race(state)
        assert events(destination) == ["notify"] * alerts
        later = time.time() + HOUR + 5
        workers = [Worker(state), Worker(state)]
        made: list[int] = []
        barrier = threading.Barrier(2)

        def scan(worker: Worker) -> None:
            barrier.wait()
            made.append(worker.enqueue_reminders(now=later))

        threads = [threading.Thread(target=scan, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for worker in workers:
            worker.close()
        assert sum(made) == alerts  # each alert's reminder enqueued once, by either worker
        _race(state)
        for n in range(alerts):
            payload = condition_activity(
                7000 + n,
                status="RESET",
                series_uid=f"5b1e0d1c-0000-4000-8000-{n:012d}",
                activity_time=time.time(),
            )
            ingest_activity(state, body(payload), payload)
        _race(state)
        order: dict[str, list[str]] = {}
        for payload in destination.payloads():
            order.setdefault(payload["alert"]["key"], []).append(payload["event"])
        assert len(order) == alerts
        assert all(seq == ["notify", "reminder", "resolved"] for seq in order.values()), order
        reminders = [r for r in _rows(state) if r.event == "reminder 1"]
        assert len(reminders) == alerts and {r.status for r in reminders} == {"delivered"}
    finally:
        destination.stop()


def _race(state: Any) -> None:
    workers = [Worker(state), Worker(state)]
    threads = [threading.Thread(target=w.run, kwargs={"drain": True}) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for worker in workers:
        worker.close()
    settle_deliveries(state)


def _rows(state: Any) -> list[Any]:
    with state.db.connect() as conn:
        return store.list_notifications(conn, store.NotificationFilter(), limit=500)


@pytest.mark.parametrize("kind", ["slack", "email"])
def test_slack_and_email_get_the_wait_and_the_reminders(
    make_state: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    port = free_port()
    messages: list[Any] = []
    if kind == "slack":
        monkeypatch.setenv("WAIT_REPEAT_SLACK_URL", f"http://127.0.0.1:{port}/services/T/B/x")
        state = make_state(routes_yaml("", kind="slack", wait="1s", repeat="1h"))
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
        state = make_state(routes_yaml(f"127.0.0.1:{port}", kind="email", wait="1s", repeat="1h"))
    try:
        now = time.time()
        # One alert resets inside the wait, another stays open.
        ingest(state, 551, "TRIGGERED", now - 0.5, seriesUid="quiet-series")
        ingest(state, 552, "RESET", now, seriesUid="quiet-series")
        ingest(state, 553, "TRIGGERED", now, seriesUid="open-series")
        time.sleep(1.1)
        settle_deliveries(state)
        notify = {r.activity_id: r for r in _rows(state) if r.event == "notify"}[553]
        assert remind(state, notify.delivered_at + HOUR + 1) == 1
        settle_deliveries(state)
    finally:
        stop()
    titles = [_title(kind, m) for m in messages]
    assert len(titles) == 2, titles
    assert titles[0].startswith("[MAJOR] ") and titles[1].startswith("[REMINDER] ")
    if kind == "email":
        # The reminder threads under its notification.
        assert messages[1]["In-Reply-To"] == messages[0]["Message-ID"]


def _title(kind: str, message: Any) -> str:
    return str(message["blocks"][0]["text"]["text"] if kind == "slack" else message["Subject"])


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ("wait: soon", "routes[0] (pager).wait: expected a duration"),
        ("repeat: -1h", "routes[0] (pager).repeat: expected a duration"),
        ("once_per_alert: false\n    repeat: 4h", "routes[0] (pager).repeat: needs once_per_alert"),
        ("once_per_alert: false\n    wait: 5m", "routes[0] (pager).wait: needs once_per_alert"),
    ],
)
def test_bad_wait_and_repeat_are_errors_naming_the_line(option: str, error: str) -> None:
    text = routes_yaml("http://127.0.0.1:9/hook") + f"    {option}\n"
    with pytest.raises(RoutesError, match=r"routes\.yaml:\d+: " + re.escape(error)):
        parse_routes(text, "routes.yaml", environ={})


def test_wait_and_repeat_parse_as_durations() -> None:
    routes = parse_routes(
        routes_yaml("http://127.0.0.1:9/hook") + "    wait: 5m\n    repeat: 4h\n",
        "routes.yaml",
        environ={},
    )
    route = routes.routes[0]
    assert (route.wait, route.repeat) == (300.0, 4 * HOUR)
