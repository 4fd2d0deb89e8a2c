"""Flapping (issue 14, item 5): a condition (deviceId + sourceConfigUid, across its alert
keys) that fires ``threshold`` times within ``window`` is notified once, saying so, and
stays quiet until it has not fired for ``calm``. Decided by the delivery worker.

Against real destinations on loopback (a webhook server, a Slack-shaped one, aiosmtpd),
through the real ingest path and real workers, on SQLite and on PostgreSQL; the dashboard
shows the badge and the noisiest conditions.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from app.ingest.service import ingest_activity
from app.notifications import flapping
from app.notifications.outbox import Worker
from app.notifications.routes import RoutesError, parse_routes
from app.storage import notifications as store
from tests.support import (
    API_TOKEN,
    FAST_DELIVERY,
    DestinationServer,
    body,
    condition_activity,
    condition_route_yaml,
    free_port,
    settle_deliveries,
)

FLAPPING = "{threshold: 3, window: 1h, calm: 2s}"


def routes_yaml(url: str, kind: str = "webhook", flap: str = FLAPPING) -> str:
    return condition_route_yaml(url, kind, slack_env="FLAPPING_SLACK_URL", flapping=flap)


def cycle(state: Any, n: int, device_id: int = 42) -> None:
    """One flap: the condition triggers (a new alert) and resets."""
    series = f"5b1e0d1c-0000-4000-8000-{device_id:04d}{n:08d}"
    now = time.time()
    for activity_id, status, at in (
        (device_id * 10000 + 2 * n, "TRIGGERED", now - 0.01),
        (device_id * 10000 + 2 * n + 1, "RESET", now),
    ):
        payload = condition_activity(
            activity_id, status=status, series_uid=series, activity_time=at, device_id=device_id
        )
        ingest_activity(state, body(payload), payload)


def titles(server: DestinationServer) -> list[str]:
    return [str(p["title"]).split("]")[0].lstrip("[") for p in server.payloads()]


def rows(state: Any) -> list[Any]:
    with state.db.connect() as conn:
        return store.list_notifications(conn, store.NotificationFilter(), limit=500)[::-1]


def test_a_flapping_condition_notifies_once_saying_so_and_stays_quiet_until_calm(
    make_state: Callable[..., Any],
) -> None:
    destination = DestinationServer().start()
    try:
        state = make_state(routes_yaml(destination.url))
        for n in range(6):
            cycle(state, n)
            settle_deliveries(state)
        # Two alerts as usual, the third firing says it flaps, the rest stay quiet.
        assert titles(destination) == [
            "MAJOR",
            "RESOLVED",
            "MAJOR",
            "RESOLVED",
            "FLAPPING",
            "RESOLVED",
        ]
        announced = destination.payloads()[4]
        assert announced["event"] == "notify"
        assert announced["text"].startswith(
            "Flapping: fired 3 times within 1h; quiet until it has not fired for 2s: "
        )
        quiet = [r for r in rows(state) if r.status == "skipped"]
        assert [r.event for r in quiet] == ["notify", "resolved"] * 3
        assert all(r.last_error.startswith("flapping: ") for r in quiet if r.event == "notify")
        # Quiet for the calm period after the last firing: then it notifies as usual.
        time.sleep(2.1)
        cycle(state, 6)
        settle_deliveries(state)
        assert titles(destination)[6:] == ["MAJOR", "RESOLVED"]
    finally:
        destination.stop()


def test_firings_keep_it_quiet_and_other_conditions_are_not_touched(
    make_state: Callable[..., Any],
) -> None:
    destination = DestinationServer().start()
    try:
        state = make_state(routes_yaml(destination.url, flap="{threshold: 2, calm: 1s}"))
        for n in range(2):
            cycle(state, n)
            settle_deliveries(state)
        assert titles(destination) == ["MAJOR", "RESOLVED", "FLAPPING", "RESOLVED"]
        # Firing every half second keeps a one-second calm from ever passing.
        for n in range(2, 6):
            time.sleep(0.5)
            cycle(state, n)
            settle_deliveries(state)
        # Another device's same condition is its own condition.
        cycle(state, 0, device_id=43)
        settle_deliveries(state)
        flaps = ["MAJOR", "RESOLVED", "FLAPPING", "RESOLVED"]
        assert titles(destination) == [*flaps, "MAJOR", "RESOLVED"]
        assert destination.payloads()[-1]["activity"]["deviceId"] == 43
    finally:
        destination.stop()


def test_two_workers_racing_announce_flapping_once(make_state: Callable[..., Any]) -> None:
    """Ten firings arrive before any worker runs; two workers race over them: two are
    sent as usual at most, the flapping message goes out once, the rest are quiet."""
    destination = DestinationServer("slow", delay=0.02).start()
    try:
        state = make_state(routes_yaml(destination.url), delivery_concurrency="4")
        for n in range(10):
            cycle(state, n)
        workers = [Worker(state), Worker(state)]
        threads = [threading.Thread(target=w.run, kwargs={"drain": True}) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for worker in workers:
            worker.close()
        settle_deliveries(state)
        notifies = [t for t in titles(destination) if t != "RESOLVED"]
        assert notifies.count("FLAPPING") == 1, notifies
        # The first two firings arrived below the threshold; whatever order the workers
        # took them in, the count of each firing is by its arrival.
        assert notifies.count("MAJOR") == 2, notifies
        sent = {
            r.activity_id for r in rows(state) if r.event == "notify" and r.status == "delivered"
        }
        assert len(sent) == 3
        resolved = [r for r in rows(state) if r.event == "resolved"]
        assert sum(r.status == "delivered" for r in resolved) == 3
    finally:
        destination.stop()


@pytest.mark.parametrize("kind", ["slack", "email"])
def test_slack_and_email_get_the_flapping_message(
    make_state: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    port = free_port()
    messages: list[Any] = []
    if kind == "slack":
        monkeypatch.setenv("FLAPPING_SLACK_URL", f"http://127.0.0.1:{port}/services/T/B/x")
        state = make_state(routes_yaml("", kind="slack", flap="{threshold: 2}"))
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
        state = make_state(routes_yaml(f"127.0.0.1:{port}", kind="email", flap="{threshold: 2}"))
    try:
        for n in range(4):
            cycle(state, n)
            settle_deliveries(state)
    finally:
        stop()
    found = [
        str(m["blocks"][0]["text"]["text"] if kind == "slack" else m["Subject"]) for m in messages
    ]
    assert [t.split("]")[0] + "]" for t in found] == [
        "[MAJOR]",
        "[RESOLVED]",
        "[FLAPPING]",
        "[RESOLVED]",
    ]


def test_the_dashboard_shows_the_badge_and_the_noisiest_conditions(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    destination = DestinationServer().start()
    try:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_yaml(destination.url, flap="{threshold: 2, calm: 1h}"))
        app = make_app(routes_file=str(path), **FAST_DELIVERY)
        state = app.app.extensions["ninjahook"]
        for n in range(3):
            cycle(state, n)
            settle_deliveries(state)
        # An open alert of the flapping condition, and one of a calm device.
        series = "5b1e0d1c-0000-4000-8000-0000000f1a90"
        payload = condition_activity(990001, series_uid=series, activity_time=time.time())
        ingest_activity(state, body(payload), payload)
        calm = condition_activity(
            990002, series_uid="calm-series", device_id=77, activity_time=time.time()
        )
        ingest_activity(state, body(calm), calm)
        settle_deliveries(state)

        assert flapping.flapping_keys(state, [series, "calm-series"]) == {series}
        noisy = flapping.noisiest(state)
        assert [(n["deviceId"], n["firings"], n["flapping"]) for n in noisy] == [
            (42, 4, True),
            (77, 1, False),
        ]
        with app.test_client() as client:
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text)
            assert csrf is not None
            login = {"token": API_TOKEN, "csrf": csrf.group(1)}
            assert client.post("/login", data=login, follow_redirects=False).status_code == 303
            page = client.get("/").text
            table = page[page.index('id="noisiest"') :]
            assert re.search(r"Disk Free Space &lt; 10%.*?>4<", table, re.S)
            items = {
                key: item
                for key, item in re.findall(
                    r'<li class="alert[^"]*" data-key="([^"]+)">(.*?)</li>', page, re.S
                )
            }
            assert set(items) == {series, "calm-series"}
            assert 'class="flapping"' in items[series]
            assert 'class="flapping"' not in items["calm-series"]
            links = {
                key: re.search(r'href="(/ui/alerts/[^"]+)"', item) for key, item in items.items()
            }
            flapping_page = client.get(links[series].group(1)).text  # type: ignore[union-attr]
            assert 'class="flapping"' in flapping_page
            calm_page = client.get(links["calm-series"].group(1)).text  # type: ignore[union-attr]
            assert "<dt>Key</dt>" in calm_page and 'class="flapping"' not in calm_page
    finally:
        destination.stop()


@pytest.mark.parametrize(
    ("flap", "error"),
    [
        ("{window: 1h}", "missing 'threshold'"),
        ("{threshold: 1}", "expected a whole number ≥ 2"),
        ("{threshold: 3, calm: later}", "flapping.calm: expected a duration"),
        ("{threshold: 3, every: 1h}", "every"),
    ],
)
def test_bad_flapping_options_are_errors_naming_the_line(flap: str, error: str) -> None:
    with pytest.raises(RoutesError, match=r"routes\.yaml:\d+: .*" + re.escape(error)):
        parse_routes(routes_yaml("http://127.0.0.1:9/hook", flap=flap), "routes.yaml", environ={})


def test_flapping_options_parse_with_defaults() -> None:
    routes = parse_routes(
        routes_yaml("http://127.0.0.1:9/hook", flap="{threshold: 5}"), "routes.yaml", environ={}
    )
    rule = routes.routes[0].flapping
    assert rule is not None and (rule.threshold, rule.window, rule.calm) == (5, 3600.0, 1800.0)
