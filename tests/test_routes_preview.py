"""`ninjahook routes test` reports what would really happen now (issue 14, item 7):
silences and maintenance windows in force, a flapping condition, and how a message
would go out (wait, grouping, reminders)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from app.silences.service import add_silence
from app.storage.tables import devices, flapping_conditions
from tests.support import condition_activity, deliver, run_cli

ROUTES = """\
destinations:
  hook: {kind: webhook, url: "http://127.0.0.1:9/hook"}
routes:
  - name: plain
    match: {activityType: [CONDITION]}
    destinations: [hook]
  - name: shaped
    match: {activityType: [CONDITION]}
    wait: 5m
    repeat: 4h
    group_by: [organization]
    group_wait: 30s
    destinations: [hook]
  - name: flappy
    match: {activityType: [CONDITION]}
    flapping: {threshold: 3, window: 1h, calm: 30m}
    destinations: [hook]
  - name: always
    match: {activityType: [CONDITION]}
    ignore_maintenance: true
    destinations: [hook]
"""
CONDITION = "0c7ed5a2-4c28-4e9c-8b43-8d4d3b0f2f11"  # condition_activity's sourceConfigUid


def test_routes_test_tells_silences_maintenance_flapping_wait_and_grouping(
    make_app: Any, settings: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES)
    app = make_app(routes_file=str(path))
    state = app.app.extensions["ninjahook"]
    now = time.time()
    with app.test_client() as client:
        for n, device in ((1, 42), (2, 43), (3, 44)):
            deliver(
                client,
                condition_activity(n, series_uid=f"s-{n}", device_id=device, activity_time=now),
            )
    env = {
        "NINJAHOOK_DATABASE_URL": settings["database_url"],
        "NINJAHOOK_INSTANCE_PATH": settings["instance_path"],
        "NINJAHOOK_ROUTES": str(path),
        "COLUMNS": "200",
    }

    # Nothing in force: each route says how its message would go out.
    clear = run_cli(["routes", "test", "1"], env=env)
    assert clear.exit_code == 0, clear.output
    assert "route plain: MATCH (notify)" in clear.output
    assert "route shaped: MATCH (notify)" in clear.output
    assert "wait 5m: sent only if the alert is still open then" in clear.output
    assert "grouped by organization=7 for 30s" in clear.output
    assert "reminder every 4h while open" in clear.output
    assert "route flappy: MATCH (notify)" in clear.output

    # A silence of device 42, added after the activity arrived, is in force now.
    silence = add_silence(
        state, matchers={"device": [42]}, comment="disk swap", created_by="al", duration="1h"
    )
    silenced = run_cli(["routes", "test", "1"], env=env)
    assert (
        f"route plain: MATCH, nothing sent: suppressed: silence {silence['id']} by al"
        in silenced.output
    )
    assert "disk swap" in silenced.output
    assert "route always: MATCH, nothing sent: suppressed: silence" in silenced.output

    # Device 43 is in NinjaOne's maintenance mode: every route but `always` holds back.
    with state.db.begin() as conn:
        conn.execute(
            # The delivery cached device 43; NinjaOne has since put it in maintenance.
            sa.update(devices)
            .where(devices.c.id == 43)
            .values(
                raw={
                    "id": 43,
                    "maintenance": {
                        "status": "IN_MAINTENANCE",
                        "start": now - 60,
                        "end": now + 3600,
                    },
                }
            )
        )
    maintained = run_cli(["routes", "test", "2"], env=env)
    assert "route plain: MATCH, nothing sent: suppressed: device 43 is in maintenance until" in (
        maintained.output
    )
    assert "route always: MATCH (notify)" in maintained.output

    # The flappy route has marked device 44's condition flapping by another firing.
    with state.db.begin() as conn:
        conn.execute(
            sa.insert(flapping_conditions).values(
                route="flappy",
                device_id=44,
                source_config_uid=CONDITION,
                flapping_since=now - 120,
                marked_activity_id=999,
                quiet_until=now + 1800,
                firings=3,
            )
        )
    flapping = run_cli(["routes", "test", "3"], env=env)
    assert "route flappy: MATCH, nothing sent: flapping: the condition flaps" in flapping.output
    assert "route plain: MATCH (notify)" in flapping.output
