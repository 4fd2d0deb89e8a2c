"""Maintenance (issue 14): a device NinjaOne reports in maintenance (the cached device's
``maintenance`` window) notifies nothing while the window lasts, recorded as suppressed;
a route with ``ignore_maintenance: true`` still notifies. Real webhook, Slack-shaped and
SMTP destinations, on every backend."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.notifications.routes import RoutesError, parse_routes
from app.silences.service import maintenance_until
from tests.support import (
    API_HEADERS,
    FAST_DELIVERY,
    DestinationServer,
    condition_activity,
    deliver,
    free_port,
    seed_entities,
    settle_deliveries,
)
from tests.test_silences import Mailbox

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
  - name: quiet-in-maintenance
    match: {{activityType: [CONDITION]}}
    destinations: [hook, chat, mail]
  - name: always
    ignore_maintenance: true
    match: {{activityType: [CONDITION], minSeverity: CRITICAL}}
    destinations: [hook]
"""


@pytest.fixture
def servers() -> Iterator[dict[str, Any]]:
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    hook, chat = DestinationServer().start(), DestinationServer().start()
    yield {"hook": hook, "chat": chat, "mailbox": mailbox, "smtp": smtp}
    hook.stop()
    chat.stop()
    smtp.stop()


@pytest.fixture
def app(
    make_app: Any, tmp_path: Path, servers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("TEST_SLACK_URL", servers["chat"].url)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(hook=servers["hook"].url, smtp_port=servers["smtp"].port))
    return make_app(routes_file=str(routes), **FAST_DELIVERY)


def _set_maintenance(db: Any, device_id: int, maintenance: dict[str, Any] | None) -> None:
    """What a sync or a fetch of the device from NinjaOne leaves in the cache."""
    from app.storage.tables import devices

    seed_entities(db, organization_id=7, device_id=device_id, location_id=9)
    raw = {"id": device_id, "displayName": f"SRV-{device_id:03d}"}
    if maintenance is not None:
        raw["maintenance"] = maintenance
    with db.begin() as conn:
        conn.execute(
            sa.update(devices)
            .where(devices.c.id == device_id)
            .values(raw=raw, observed_at=time.time() + 3600)
        )


def _statuses(client: Any, activity_id: int) -> dict[tuple[str, str], str]:
    items = client.get(f"/activities/{activity_id}/deliveries", headers=API_HEADERS).json()
    return {(d["route"], d["destination"]): d["status"] for d in items["items"]}


def test_a_device_in_maintenance_notifies_nothing_but_routes_that_opt_out(
    app: Any, servers: dict[str, Any]
) -> None:
    state = app.app.extensions["ninjahook"]
    now = time.time()
    window = {"status": "IN_MAINTENANCE", "start": now - 600, "end": now + 3600}
    _set_maintenance(state.db, 42, window)
    with app.test_client() as client:
        deliver(client, condition_activity(1, device_id=42, severity="CRITICAL", expand=False))
        deliver(client, condition_activity(2, device_id=43, severity="MAJOR", expand=False))
        settle_deliveries(state)
        assert _statuses(client, 1) == {
            ("quiet-in-maintenance", "hook"): "suppressed",
            ("quiet-in-maintenance", "chat"): "suppressed",
            ("quiet-in-maintenance", "mail"): "suppressed",
            ("always", "hook"): "delivered",
        }
        items = client.get("/activities/1/deliveries", headers=API_HEADERS).json()["items"]
        reasons = {d["suppressedReason"] for d in items if d["status"] == "suppressed"}
        assert len(reasons) == 1
        (reason,) = reasons
        assert reason.startswith("device 42 is in maintenance until ")
        assert all(d["silenceId"] is None for d in items)
        # Device 43 is not in maintenance: every destination heard of it.
        assert set(_statuses(client, 2).values()) == {"delivered"}
    hook_ids = sorted(p["activity"]["id"] for p in servers["hook"].payloads())
    assert hook_ids == [1, 2]  # 1 only through the route that ignores maintenance
    (chat,) = servers["chat"].payloads()  # Slack-shaped: text and blocks
    assert "*Activity:* 2" in str(chat)
    (mail,) = servers["mailbox"].messages
    assert b"00000000-0000-0000-0000-000000000002" in mail  # activity 2's alert


@pytest.mark.parametrize(
    ("maintenance", "suppressed"),
    [
        ({"status": "IN_MAINTENANCE", "start": -600, "end": 3600}, True),
        ({"status": "PENDING", "start": -60, "end": 3600}, True),  # the cache lags the start
        ({"status": "IN_MAINTENANCE", "start": -7200, "end": -3600}, False),  # window over
        ({"status": "PENDING", "start": 3600, "end": 7200}, False),  # not yet
        ({"status": "FAILED", "start": -600, "end": 3600}, False),
        ({"status": "IN_MAINTENANCE"}, True),  # no times: NinjaOne says it is in maintenance
        (None, False),
    ],
)
def test_the_cached_window_decides(
    app: Any, servers: dict[str, Any], maintenance: dict[str, Any] | None, suppressed: bool
) -> None:
    state = app.app.extensions["ninjahook"]
    now = time.time()
    if maintenance is not None:
        maintenance = {k: (now + v if k in ("start", "end") else v) for k, v in maintenance.items()}
    _set_maintenance(state.db, 42, maintenance)
    with app.test_client() as client:
        deliver(client, condition_activity(1, device_id=42, expand=False))
        settle_deliveries(state)
        expected = "suppressed" if suppressed else "delivered"
        assert set(_statuses(client, 1).values()) == {expected}
    assert len(servers["hook"].payloads()) == (0 if suppressed else 1)


def test_maintenance_in_an_expanded_device_counts_too(app: Any, servers: dict[str, Any]) -> None:
    """A delivery whose expanded device carries the window updates the cache first (the
    entities stage runs before the notifications stage)."""
    state = app.app.extensions["ninjahook"]
    now = time.time()
    payload = condition_activity(1, device_id=42, activity_time=now)
    payload["device"]["maintenance"] = {"status": "IN_MAINTENANCE", "start": now - 60}
    with app.test_client() as client:
        deliver(client, payload)
        settle_deliveries(state)
        assert set(_statuses(client, 1).values()) == {"suppressed"}
    assert servers["hook"].payloads() == []


def test_maintenance_times_in_milliseconds_are_recognised() -> None:
    now = 1_764_300_000.0
    in_ms = {"status": "IN_MAINTENANCE", "start": (now - 60) * 1000, "end": (now + 60) * 1000}
    assert maintenance_until(in_ms, now) == pytest.approx(now + 60)
    assert maintenance_until({"status": "IN_MAINTENANCE", "start": now - 1}, now) == math.inf
    assert maintenance_until({"start": "yesterday"}, now) is None
    assert maintenance_until("IN_MAINTENANCE", now) is None


def test_ignore_maintenance_must_be_true_or_false() -> None:
    text = (
        "destinations:\n  d: {kind: webhook, url: 'http://127.0.0.1:9/'}\n"
        "routes:\n  - {name: r, destinations: [d], ignore_maintenance: 'yes please'}\n"
    )
    with pytest.raises(RoutesError, match=r"routes\.yaml:4: .*ignore_maintenance: expected true"):
        parse_routes(text, "routes.yaml")
    ok = parse_routes(text.replace("'yes please'", "true"), "routes.yaml")
    assert ok.routes[0].ignore_maintenance is True
    assert (
        parse_routes(text.replace(", ignore_maintenance: 'yes please'", ""))
        .routes[0]
        .ignore_maintenance
        is False
    )


@pytest.mark.parametrize(("ignore", "reads_device"), [(False, True), (True, False)])
def test_only_routes_that_honour_maintenance_read_the_cached_device(
    make_app: Any, tmp_path: Path, ignore: bool, reads_device: bool
) -> None:
    """The one extra read on the ingest path (a primary-key read of the device) happens
    only for a route that would notify and honours maintenance; an expanded delivery
    carries the device itself and needs no read."""
    from app.ingest.service import ingest_activity
    from tests.support import body, minimal_activity, recorded_statements

    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "destinations:\n  d: {kind: webhook, url: 'http://127.0.0.1:9/'}\n"
        f"routes:\n  - {{name: r, destinations: [d], ignore_maintenance: {str(ignore).lower()}}}\n"
    )
    state = make_app(routes_file=str(routes)).app.extensions["ninjahook"]
    for payload, expected in (
        (minimal_activity(7100, deviceId=42), reads_device),
        (condition_activity(7101, device_id=42), False),
    ):
        with recorded_statements(state.db.engine) as statements:
            ingest_activity(state, body(payload), payload)
        device_reads = [
            s for s in statements if s.lstrip().upper().startswith("SELECT") and "devices" in s
        ]
        assert bool(device_reads) is expected, (payload["id"], device_reads)
