"""Routed delivery end to end: real destination servers on loopback, the outbox on every
backend, retries, dead letters, `deliveries retry`, and a worker killed with kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from app.cli.main import main as cli
from app.notifications import reads as service
from app.notifications.outbox import Worker, retry_delay
from app.storage import notifications as store
from tests.support import (
    API_HEADERS,
    FAST_DELIVERY,
    INGEST_PATH,
    ROOT,
    WEBHOOK_HEADERS,
    DestinationServer,
    condition_activity,
    free_port,
    live_server,
    minimal_activity,
    one_route_file,
    settle_deliveries,
)

ROUTES = """\
destinations:
  flaky:
    kind: webhook
    url: {flaky}
  slow:
    kind: webhook
    url: {slow}
  down:
    kind: webhook
    url: {down}
  never:
    kind: webhook
    url: {never}
routes:
  - name: majors-to-flaky
    match:
      activityType: [CONDITION]
      minSeverity: MAJOR
    destinations: [flaky]
  - name: org7-to-slow
    match:
      organization: ["org 7"]
    destinations: [slow]
  - name: servers-to-down
    match:
      nodeClass: WINDOWS_SERVER
      sourceName: "^Disk"
    destinations: [down]
  - name: criticals-only
    match:
      minSeverity: CRITICAL
    destinations: [never]
  - name: other-org
    match:
      organization: [99]
    destinations: [never]
"""


@pytest.fixture
def destinations() -> Iterator[dict[str, Any]]:
    servers = {
        "flaky": DestinationServer("flaky").start(),
        "slow": DestinationServer("slow", delay=0.5).start(),
        "never": DestinationServer().start(),
    }
    down_port = free_port()
    yield {**servers, "down_port": down_port, "down_url": f"http://127.0.0.1:{down_port}/hook"}
    for server in servers.values():
        server.stop()


def write_routes(tmp_path: Path, destinations: dict[str, Any]) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(
        ROUTES.format(
            flaky=destinations["flaky"].url,
            slow=destinations["slow"].url,
            down=destinations["down_url"],
            never=destinations["never"].url,
        )
    )
    return path


def rows(state: Any, **flt: Any) -> list[Any]:
    with state.db.connect() as conn:
        return store.list_notifications(conn, store.NotificationFilter(**flt), limit=1000)


def test_triggered_and_reset_reach_exactly_the_matching_routes(
    make_app: Callable[..., Any],
    destinations: dict[str, Any],
    tmp_path: Path,
    settings: dict[str, Any],
) -> None:
    app = make_app(routes_file=str(write_routes(tmp_path, destinations)), **FAST_DELIVERY)
    state = app.app.extensions["ninjahook"]
    series = "5b1e0d1c-0000-4000-8000-00000000a1e7"
    # Live activity times: an alert already over when its activities arrive (a backfill)
    # notifies nothing by default (tests/test_lateness.py).
    now = time.time()
    with app.test_client() as client:
        for activity_id, status in ((1001, "TRIGGERED"), (1002, "TRIGGERED"), (1003, "TRIGGERED")):
            payload = condition_activity(
                activity_id, status=status, series_uid=series, activity_time=now
            )
            assert (
                client.post(INGEST_PATH, json=payload, headers=WEBHOOK_HEADERS).status_code == 200
            )
        # A redelivery of a stored id enqueues nothing either.
        payload = condition_activity(1001, series_uid=series, activity_time=now)
        assert client.post(INGEST_PATH, json=payload, headers=WEBHOOK_HEADERS).json()["duplicate"]
        reset = condition_activity(1004, status="RESET", series_uid=series, activity_time=now + 1)
        assert client.post(INGEST_PATH, json=reset, headers=WEBHOOK_HEADERS).status_code == 200
        # A non-condition from another organization matches none of the routes.
        other = minimal_activity(1005)
        assert client.post(INGEST_PATH, json=other, headers=WEBHOOK_HEADERS).status_code == 200

    enqueued = rows(state)
    assert sorted((r.activity_id, r.route, r.event) for r in enqueued) == [
        (1001, "majors-to-flaky", "notify"),
        (1001, "org7-to-slow", "notify"),
        (1001, "servers-to-down", "notify"),
        (1004, "majors-to-flaky", "resolved"),
        (1004, "org7-to-slow", "resolved"),
        (1004, "servers-to-down", "resolved"),
    ]

    settle_deliveries(state)

    flaky, slow, never = destinations["flaky"], destinations["slow"], destinations["never"]
    by_uid = {r.uid: r for r in rows(state)}
    for server, route in ((flaky, "majors-to-flaky"), (slow, "org7-to-slow")):
        bodies = server.payloads()
        delivered = {b["id"]: b for b in bodies}
        assert [b["event"] for b in delivered.values()] == ["notify", "resolved"]
        notify, resolved = delivered.values()
        assert resolved["refersTo"] == notify["id"]
        assert notify["activity"]["id"] == 1001 and resolved["activity"]["id"] == 1004
        assert notify["organization"] == {"id": 7, "name": "Org 7"}
        assert all(
            by_uid[uid].status == "delivered" and by_uid[uid].route == route for uid in delivered
        )
    # The flaky destination answered 500 once per delivery, and was sent the same id again.
    assert sorted(Counter(flaky.ids()).values()) == [2, 2]
    assert len(slow.ids()) == 2
    assert never.requests == []

    dead = service.dead_letters(state)["items"]
    assert {(d["route"], d["event"]) for d in dead} == {
        ("servers-to-down", "notify"),
        ("servers-to-down", "resolved"),
    }
    by_event = {d["event"]: d for d in dead}
    assert by_event["notify"]["attempts"] == 3
    assert "ConnectError" in by_event["notify"]["lastError"]
    # The resolved follow-up was never tried: it is held with its dead notification.
    assert by_event["resolved"]["attempts"] == 0
    assert by_event["resolved"]["lastError"] == store.HELD_WITH_NOTIFICATION

    # The destination comes back; `deliveries retry` queues both again, and since the
    # alert is over by now, neither is sent: no stale open (tests/test_lifecycle.py).
    down = DestinationServer(port=destinations["down_port"]).start()
    try:
        env = {"NINJAHOOK_DATABASE_URL": settings["database_url"]}
        result = CliRunner().invoke(
            cli, ["--instance", settings["instance_path"], "deliveries", "retry"], env=env
        )
        assert result.exit_code == 0, result.output
        assert "2 dead letters queued again" in result.output
        settle_deliveries(state)
        assert down.ids() == []
    finally:
        down.stop()
    assert service.dead_letters(state)["items"] == []
    metrics = service.notification_metrics(state)
    assert metrics.queue_depth == 0 and metrics.oldest_pending_age == 0.0
    assert {(c.destination, c.status): c.count for c in metrics.counts} == {
        ("flaky", "delivered"): 2,
        ("slow", "delivered"): 2,
        ("down", "skipped"): 2,
    }


def test_an_alert_that_resets_and_triggers_again_notifies_again(
    make_app: Callable[..., Any], destinations: dict[str, Any], tmp_path: Path
) -> None:
    app = make_app(routes_file=str(write_routes(tmp_path, destinations)), **FAST_DELIVERY)
    state = app.app.extensions["ninjahook"]
    series = "5b1e0d1c-0000-4000-8000-00000000b0b0"
    sequence = [(2001, "TRIGGERED"), (2002, "RESET"), (2003, "RESET"), (2004, "TRIGGERED")]
    with app.test_client() as client:
        for activity_id, status in sequence:
            payload = condition_activity(activity_id, status=status, series_uid=series)
            assert (
                client.post(INGEST_PATH, json=payload, headers=WEBHOOK_HEADERS).status_code == 200
            )
    flaky_rows = sorted(
        ((r.activity_id, r.event) for r in rows(state, route="majors-to-flaky")),
    )
    # The second RESET finds the alert resolved already and sends nothing.
    assert flaky_rows == [(2001, "notify"), (2002, "resolved"), (2004, "notify")]


def test_a_late_trigger_older_than_its_reset_stays_quiet(
    make_app: Callable[..., Any], destinations: dict[str, Any], tmp_path: Path
) -> None:
    app = make_app(routes_file=str(write_routes(tmp_path, destinations)), **FAST_DELIVERY)
    state = app.app.extensions["ninjahook"]
    series = "5b1e0d1c-0000-4000-8000-00000000c0de"
    # Arrival order: the RESET (t=200) overtakes its TRIGGERED (t=100); then a new
    # TRIGGERED (t=300) opens the alert again.
    arrivals = [(2102, "RESET", 200.0), (2101, "TRIGGERED", 100.0), (2103, "TRIGGERED", 300.0)]
    with app.test_client() as client:
        for activity_id, status, at in arrivals:
            payload = condition_activity(
                activity_id, status=status, series_uid=series, activity_time=at
            )
            assert (
                client.post(INGEST_PATH, json=payload, headers=WEBHOOK_HEADERS).status_code == 200
            )
    flaky_rows = sorted((r.activity_id, r.event) for r in rows(state, route="majors-to-flaky"))
    assert flaky_rows == [(2103, "notify")]


def test_read_api_lists_an_activitys_deliveries_and_the_dead_letters(
    make_app: Callable[..., Any], destinations: dict[str, Any], tmp_path: Path
) -> None:
    app = make_app(
        routes_file=str(write_routes(tmp_path, destinations)),
        **{**FAST_DELIVERY, "delivery_max_attempts": "1"},
    )
    state = app.app.extensions["ninjahook"]
    with app.test_client() as client:
        payload = condition_activity(3001)
        assert client.post(INGEST_PATH, json=payload, headers=WEBHOOK_HEADERS).status_code == 200
        settle_deliveries(state)
        listed = client.get("/activities/3001/deliveries", headers=API_HEADERS)
        assert listed.status_code == 200
        items = listed.json()["items"]
        assert {(i["destination"], i["status"]) for i in items} == {
            ("flaky", "dead"),  # one attempt allowed, and the flaky one fails the first
            ("slow", "delivered"),
            ("down", "dead"),
        }
        dead = client.get("/deliveries?status=dead&limit=1", headers=API_HEADERS).json()
        assert len(dead["items"]) == 1 and dead["nextCursor"]
        rest = client.get(
            f"/deliveries?status=dead&cursor={dead['nextCursor']}", headers=API_HEADERS
        ).json()
        assert {dead["items"][0]["destination"], rest["items"][0]["destination"]} == {
            "flaky",
            "down",
        }
        assert client.get("/activities/999/deliveries", headers=API_HEADERS).status_code == 404
        assert client.get("/deliveries").status_code == 401


def test_retry_delay_grows_with_jitter_and_honours_retry_after() -> None:
    delays = [retry_delay(n, 10.0, 3600.0, None) for n in (1, 2, 3, 4)]
    for attempt, delay in enumerate(delays, start=1):
        step = 10.0 * 2 ** (attempt - 1)
        assert step / 2 <= delay <= step
    assert retry_delay(30, 10.0, 3600.0, None) <= 3600.0
    assert retry_delay(1, 10.0, 3600.0, 120.0) == 120.0


def test_retry_after_from_a_destination_postpones_the_retry(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    limited = DestinationServer("error", status=429, retry_after="30").start()
    try:
        routes = tmp_path / "routes.yaml"
        routes.write_text(
            f"destinations:\n  d: {{kind: webhook, url: '{limited.url}'}}\n"
            "routes:\n  - {name: all, destinations: [d]}\n"
        )
        app = make_app(routes_file=str(routes), **FAST_DELIVERY)
        state = app.app.extensions["ninjahook"]
        with app.test_client() as client:
            client.post(INGEST_PATH, json=minimal_activity(4001), headers=WEBHOOK_HEADERS)
        before = time.time()
        worker = Worker(state)
        worker.run(drain=True)
        worker.close()
        (row,) = rows(state)
        assert row.status == "pending" and row.last_status_code == 429
        assert row.next_attempt_at >= before + 29
        assert len(limited.requests) == 1
    finally:
        limited.stop()


def _worker_env(settings: dict[str, Any], routes: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")}
    env.update(
        {
            "NINJAHOOK_DATABASE_URL": settings["database_url"],
            "NINJAHOOK_INSTANCE_PATH": settings["instance_path"],
            "NINJAHOOK_ROUTES": str(routes),
            **{f"NINJAHOOK_{k.upper()}": v for k, v in FAST_DELIVERY.items()},
            "NINJAHOOK_DELIVERY_LEASE": "2",
            "NINJAHOOK_DELIVERY_TIMEOUT": "1",
        }
    )
    return env


def test_a_worker_killed_mid_delivery_leaves_it_to_be_retried(
    make_app: Callable[..., Any], settings: dict[str, Any], tmp_path: Path
) -> None:
    destination = DestinationServer("hang").start()
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f"destinations:\n  d: {{kind: webhook, url: '{destination.url}', timeout: 1}}\n"
        "routes:\n  - {name: all, destinations: [d]}\n"
    )
    app = make_app(routes_file=str(routes))
    state = app.app.extensions["ninjahook"]
    with app.test_client() as client:
        payload = condition_activity(5001)
        assert client.post(INGEST_PATH, json=payload, headers=WEBHOOK_HEADERS).status_code == 200
    ninjahook = str(Path(sys.executable).with_name("ninjahook"))
    env = _worker_env(settings, routes)
    proc = subprocess.Popen(
        [ninjahook, "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert destination.received.wait(30), "the worker never called the destination"
        (row,) = rows(state)
        assert row.status == "delivering"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        destination.mode = "ok"
        destination.release.set()
    first_id = destination.ids()[0]

    # The delivery stays leased to the dead worker until its lease runs out; then a
    # new worker takes it.
    (row,) = rows(state)
    assert row.status == "delivering" and row.attempts == 1
    time.sleep(max(0.0, row.lease_expires_at - time.time()) + 0.1)
    drained = subprocess.run(
        [ninjahook, "worker", "--drain"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert drained.returncode == 0, drained.stderr.decode()[-2000:]
    (row,) = rows(state)
    try:
        assert row.status == "delivered"
        assert row.attempts == 2
        # Both attempts carried the same delivery id, so the destination can deduplicate.
        assert destination.ids() == [first_id, first_id] and first_id == row.uid
    finally:
        destination.stop()


def test_on_sqlite_the_server_delivers_by_itself(
    make_app: Callable[..., Any], tmp_path: Path, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        # Beside PostgreSQL the standalone `ninjahook worker` delivers (tested above)
        # unless NINJAHOOK_DELIVERY_WORKER=on asks the server to as well.
        route = str(one_route_file(tmp_path, "http://127.0.0.1:9/"))
        for mode, expected in (("auto", []), ("on", ["delivery-worker"])):
            scheduler = make_app(routes_file=route, delivery_worker=mode).app.extensions[
                "ninjahook.scheduler"
            ]
            assert [t.name for t in scheduler.tasks if t.name.startswith("delivery")] == expected
        return
    destination = DestinationServer().start()
    try:
        app = make_app(
            routes_file=str(one_route_file(tmp_path, destination.url)),
            background_tasks="1",
            **FAST_DELIVERY,
        )
        with live_server(app) as server:
            response = httpx.post(
                server.url + INGEST_PATH,
                content=json.dumps(minimal_activity(6001)),
                headers=WEBHOOK_HEADERS,
            )
            assert response.status_code == 200
            assert destination.received.wait(20), "the in-process worker sent nothing"
        (payload,) = destination.payloads()
        assert payload["activity"]["id"] == 6001
    finally:
        destination.stop()


def test_concurrent_workers_never_take_the_same_delivery(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    app = make_app(routes_file=str(one_route_file(tmp_path, "http://127.0.0.1:9/")))
    state = app.app.extensions["ninjahook"]
    now = time.time()
    with state.db.begin() as conn:
        for n in range(40):
            store.enqueue(
                conn,
                activity_id=7000 + n,
                route="all",
                destination="d",
                kind="webhook",
                event="notify",
                alert_key=None,
                refers_to=None,
                now=now,
            )
    taken: list[list[str]] = [[], [], []]
    barrier = threading.Barrier(len(taken))

    def take(slot: int) -> None:
        barrier.wait()
        while True:
            with state.db.begin() as conn:
                claimed = store.claim(conn, now=time.time(), lease=60, holder=f"w{slot}", limit=3)
            if not claimed:
                return
            taken[slot].extend(r.uid for r in claimed)

    threads = [threading.Thread(target=take, args=(slot,)) for slot in range(len(taken))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    everything = [uid for part in taken for uid in part]
    assert len(everything) == 40 and len(set(everything)) == 40
    # A leased delivery is not due again until its lease runs out.
    with state.db.begin() as conn:
        assert store.claim(conn, now=time.time(), lease=60, holder="late", limit=50) == []
        again = store.claim(conn, now=time.time() + 61, lease=60, holder="late", limit=50)
    assert len(again) == 40 and all(r.attempts == 2 for r in again)


def test_replay_resends_delivered_messages_under_the_same_id(
    make_app: Callable[..., Any], settings: dict[str, Any], tmp_path: Path
) -> None:
    destination = DestinationServer().start()
    try:
        app = make_app(routes_file=str(one_route_file(tmp_path, destination.url)), **FAST_DELIVERY)
        state = app.app.extensions["ninjahook"]
        with app.test_client() as client:
            client.post(INGEST_PATH, json=minimal_activity(8001), headers=WEBHOOK_HEADERS)
        settle_deliveries(state)
        env = {"NINJAHOOK_DATABASE_URL": settings["database_url"], "COLUMNS": "250"}
        base = ["--instance", settings["instance_path"], "deliveries"]
        runner = CliRunner()
        listed = runner.invoke(cli, [*base, "list", "--since", "1h"], env=env)
        assert listed.exit_code == 0 and "delivered" in listed.output
        retried = runner.invoke(cli, [*base, "retry"], env=env)
        assert "0 dead letters queued again" in retried.output
        bad = runner.invoke(cli, [*base, "replay", "--since", "yesterday-ish"], env=env)
        assert bad.exit_code == 1 and "--since: expected" in bad.output
        replayed = runner.invoke(cli, [*base, "replay", "--since", "1h", "--route", "all"], env=env)
        assert replayed.exit_code == 0 and "1 deliveries queued again" in replayed.output
        settle_deliveries(state)
        first, second = destination.ids()
        assert first == second
    finally:
        destination.stop()


def test_secrets_never_reach_the_logs_or_the_outbox(
    make_app: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    secret_url = f"http://127.0.0.1:{port}/services/T0/B0/S3CR3TT0KEN"
    monkeypatch.setenv("SLACK_URL", secret_url)
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "destinations:\n  chat: {kind: slack, url_env: SLACK_URL}\n"
        "routes:\n  - {name: all, destinations: [chat]}\n"
    )
    app = make_app(routes_file=str(routes), **{**FAST_DELIVERY, "delivery_max_attempts": "2"})
    state = app.app.extensions["ninjahook"]
    with app.test_client() as client:
        client.post(INGEST_PATH, json=minimal_activity(9001), headers=WEBHOOK_HEADERS)
    caplog.set_level("DEBUG")
    settle_deliveries(state)
    (row,) = rows(state)
    assert row.status == "dead" and "ConnectError" in row.last_error
    assert "S3CR3T" not in row.last_error
    assert "dead letter" in caplog.text and "S3CR3T" not in caplog.text
    # Delivered, too: httpx logs each request's URL, which must come out redacted.
    chat = DestinationServer(port=port).start()
    try:
        with state.db.begin() as conn:
            assert store.requeue(conn, store.NotificationFilter(), time.time()) == 1
        settle_deliveries(state)
    finally:
        chat.stop()
    assert len(chat.requests) == 1 and rows(state)[0].status == "delivered"
    assert "HTTP Request: POST" in caplog.text and "S3CR3T" not in caplog.text
