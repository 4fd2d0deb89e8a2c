"""Alerts opened by unexpanded deliveries (a NinjaOne notification channel, every
backfilled activity: only ``deviceId``) show and filter by the organization and location
of their device as soon as the entity cache knows it: on the read API and the dashboard.
"""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

import sqlalchemy as sa

from app.storage import alerts as store
from app.storage.tables import alerts, devices, organizations
from tests.support import API_HEADERS, condition_activity, deliver, seed_entities
from tests.support.browser import log_in


def unexpanded(activity_id: int, series: str, device_id: int, **extra: Any) -> dict[str, Any]:
    """A CONDITION activity as a notification channel (or a backfill) delivers it."""
    return condition_activity(
        activity_id, series_uid=series, device_id=device_id, expand=False, **extra
    )


def alert_keys(client: Any, query: str) -> list[str]:
    """Every alert key ``/alerts?<query>`` answers, following the cursor one by one."""
    keys: list[str] = []
    cursor = ""
    while True:
        r = client.get(f"/alerts?{query}&limit=1{cursor}", headers=API_HEADERS)
        assert r.status_code == 200, r.text
        page = r.json()
        keys += [item["key"] for item in page["items"]]
        if not page["nextCursor"]:
            return keys
        cursor = "&cursor=" + page["nextCursor"]


def test_an_unexpanded_alert_takes_its_devices_organization_and_location(
    client: Any, state: Any
) -> None:
    deliver(client, unexpanded(1, "chan-disk", 42, severity="CRITICAL"))
    # Before the cache knows the device, there is nothing to show: no guess.
    (before,) = client.get("/alerts", headers=API_HEADERS).json()["items"]
    assert before["organizationId"] is None and before["organizationName"] is None
    assert client.get("/alerts?organizationId=7", headers=API_HEADERS).json()["items"] == []

    # The cache learns the device later (a sync, another delivery): read time decides.
    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    (listed,) = client.get("/alerts", headers=API_HEADERS).json()["items"]
    detail = client.get("/alerts/chan-disk", headers=API_HEADERS).json()
    for alert in (listed, detail):
        assert alert["deviceId"] == 42
        assert alert["deviceName"] == "SRV-042"
        assert alert["organizationId"] == 7
        assert alert["organizationName"] == "Org 7"
        assert alert["locationId"] == 9
        assert alert["locationName"] == "Site 9"
    # Its activities say the same (they always took names through the cached device).
    (activity,) = detail["history"]
    assert activity["organizationName"] == "Org 7"
    assert activity["locationName"] == "Site 9"


def test_the_organization_filter_finds_alerts_through_the_cached_device(
    client: Any, state: Any
) -> None:
    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    seed_entities(state.db, organization_id=8, device_id=43, location_id=10)
    deliver(client, unexpanded(1, "org7-via-device", 42))
    deliver(
        client,
        condition_activity(
            2, series_uid="org8-expanded", organization_id=8, device_id=43, location_id=10
        ),
    )
    deliver(client, unexpanded(3, "unknown-device", 99))
    # An alert keeps the organization it was delivered with, even when its device has
    # moved to another organization in the cache since.
    deliver(
        client,
        condition_activity(4, series_uid="moved", organization_id=8, device_id=44, location_id=10),
    )
    with state.db.begin() as conn:
        conn.execute(sa.update(devices).where(devices.c.id == 44).values(organization_id=7))

    assert alert_keys(client, "organizationId=7") == ["org7-via-device"]
    assert sorted(alert_keys(client, "organizationId=8")) == ["moved", "org8-expanded"]
    assert alert_keys(client, "organizationId=9") == []
    assert alert_keys(client, "organizationId=7&deviceId=42") == ["org7-via-device"]
    assert alert_keys(client, "organizationId=7&severity=MAJOR") == ["org7-via-device"]
    assert alert_keys(client, "organizationId=7&severity=MINOR") == []
    moved = client.get("/alerts/moved", headers=API_HEADERS).json()
    assert (moved["organizationId"], moved["organizationName"]) == (8, "Org 8")
    # Closed alerts too (state=all), and a RESET keeps it in its organization.
    deliver(
        client, unexpanded(5, "org7-via-device", 42, status="RESET", activity_time=1764300100.0)
    )
    assert alert_keys(client, "organizationId=7") == []
    assert alert_keys(client, "organizationId=7&state=closed") == ["org7-via-device"]
    assert alert_keys(client, "organizationId=7&state=all") == ["org7-via-device"]


def test_the_dashboard_files_an_unexpanded_alert_under_its_organization(
    client: Any, state: Any
) -> None:
    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    deliver(client, unexpanded(1, "chan-cpu", 42, severity="CRITICAL", sourceName="CPU high"))
    log_in(client)
    page = client.get("/").text
    row = re.search(r'<li class="alert sev-critical" data-key="chan-cpu">.*?</li>', page, re.S)
    assert row is not None
    assert '<span class="organization">Org 7</span>' in row.group()
    assert "SRV-042" in row.group()
    assert "No organization" not in page
    filtered = client.get("/?organizationId=7").text
    assert 'data-key="chan-cpu"' in filtered
    assert 'id="open-count">1<' in filtered
    assert 'data-key="chan-cpu"' not in client.get("/?organizationId=8").text
    assert 'id="open-count">0<' in client.get("/ui/live?organizationId=8").text
    alert_page = client.get("/ui/alerts/chan-cpu").text
    assert "<dt>Organization</dt><dd>Org 7 (#7)</dd>" in alert_page
    assert "<dt>Location</dt><dd>Site 9 (#9)</dd>" in alert_page


def _many_alerts(state: Any, count: int) -> None:
    """``count`` open alerts on 20,000 cached devices in 200 organizations, half of them
    without an organization of their own (opened by unexpanded deliveries)."""
    with state.db.begin() as conn:
        conn.execute(
            sa.insert(organizations),
            [
                {"id": o, "name": f"Org {o}", "observed_at": 0.0, "updated_at": 0.0}
                for o in range(1, 201)
            ],
        )
        conn.execute(
            sa.insert(devices),
            [
                {"id": d, "organization_id": 1 + d % 200, "observed_at": 0.0, "updated_at": 0.0}
                for d in range(1, 20_001)
            ],
        )
        rows = []
        for i in range(count):
            device = 1 + (i * 7) % 20_000
            rows.append(
                {
                    "key": f"a{i}",
                    "state": "open",
                    "acknowledged": False,
                    "device_id": device,
                    "organization_id": None if i % 2 else 1 + device % 200,
                    "location_id": None,
                    "severity": "MINOR",
                    "priority": None,
                    "activity_type": "CONDITION",
                    "source_name": "Disk",
                    "message": "low",
                    "opened_at": 1.7e9 + i,
                    "closed_at": None,
                    "last_activity_time": 1.7e9 + i,
                    "last_activity_id": i + 1,
                }
            )
        conn.execute(sa.insert(alerts), rows)
        conn.exec_driver_sql("ANALYZE")


def test_the_organization_filter_stays_an_index_seek_at_5000_alerts(
    client: Any, state: Any
) -> None:
    _many_alerts(state, 5000)
    flt = store.AlertFilter(organization_id=5)
    with state.db.connect() as conn:
        expected = {
            row.key
            for row in conn.execute(
                sa.select(alerts.c.key)
                .outerjoin(devices, devices.c.id == alerts.c.device_id)
                .where(sa.func.coalesce(alerts.c.organization_id, devices.c.organization_id) == 5)
            )
        }
        assert len(expected) == 25
        if conn.dialect.name == "sqlite":
            stmt = store._alert_select(100).where(*store._conditions(flt)).limit(51)
            sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = " | ".join(r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert "ix_alerts_organization_id" in plan, plan
            assert "ix_devices_organization_id" in plan, plan
            assert "ix_alerts_device_id" in plan, plan
            assert "SCAN alerts" not in plan and "SCAN devices" not in plan, plan
    timings = []
    for _ in range(7):
        started = time.perf_counter()
        keys = alert_keys_fast(client, "organizationId=5")
        timings.append(time.perf_counter() - started)
    assert set(keys) == expected
    assert statistics.median(timings) < 0.25, timings


def alert_keys_fast(client: Any, query: str) -> list[str]:
    """One page of 100 from ``/alerts?<query>`` (enough for the organization's 25)."""
    r = client.get(f"/alerts?{query}&limit=100", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    assert r.json()["nextCursor"] is None
    return [item["key"] for item in r.json()["items"]]
