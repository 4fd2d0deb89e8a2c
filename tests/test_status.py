"""`ninjahook status`, GET /status and the dashboard's status panel: is this thing working?"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from app.ninjaone.emulator import Emulator
from app.status import service
from app.storage.tables import activities
from tests.support import (
    API_HEADERS,
    API_TOKEN,
    FAST_DELIVERY,
    LiveServer,
    deliver,
    minimal_activity,
    ninjaone_env,
    one_route_file,
    run_cli,
    settle_deliveries,
)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=5, history=5) as emu:
        yield emu


def credentials(emulator: Emulator) -> dict[str, str]:
    return {
        "ninjaone_base_url": emulator.url,
        "ninjaone_client_id": emulator.client_id,
        "ninjaone_client_secret": emulator.client_secret,
    }


def lines(output: str) -> dict[str, tuple[str, str]]:
    """The CLI's plain (not a terminal) output: check name → (level, summary)."""
    found = {}
    for line in output.splitlines():
        match = re.fullmatch(r"(green|amber|red)\s+([^:]+): (.*)", line)
        if match:
            found[match.group(2)] = (match.group(1), match.group(3))
    return found


def test_a_healthy_setup_is_green_and_exits_0(
    emulator: Emulator, make_app: Any, settings: dict[str, Any]
) -> None:
    env = ninjaone_env(emulator, settings)
    app = make_app(**credentials(emulator))
    server = LiveServer(app).start()
    try:
        configured = run_cli(
            ["configure", "--url", server.url, "--allow-http"]
            + [f"--activity={t}" for t in ("CONDITION", "SYSTEM", "ACTION", "PATCH_MANAGEMENT")],
            env,
        )
        assert configured.exit_code == 0, configured.output
        produced = emulator.produce(3)
        assert [d.outcome for d in emulator.deliveries] == ["delivered"] * len(produced)
        assert run_cli(["sync"], env).exit_code == 0
        backfilled = run_cli(["backfill"], env)
        assert backfilled.exit_code == 0, backfilled.output

        result = run_cli(["status"], env)
        assert result.exit_code == 0, result.output
        found = lines(result.stdout)
        for name in (
            "NinjaOne webhook",
            "NinjaOne API",
            "Last delivery",
            "Backfill",
            "Entity cache",
            "Dead letters",
        ):
            assert found[name][0] == "green", (name, result.stdout)
        assert "red" not in {level for level, _ in found.values()}
        assert "(4 activity types)" in found["NinjaOne webhook"][1]
        assert f"{len(produced)} fetched, 0 missed by the webhook" in found["Backfill"][1]
        devices = len(emulator.world.devices)
        assert (
            f"listed {len(emulator.world.organizations)} organizations" in found["Entity cache"][1]
        )
        assert f"{devices} devices" in found["Entity cache"][1]
        assert result.stdout.rstrip().splitlines()[-1] in ("overall: green", "overall: amber")

        as_json = run_cli(["status", "--json"], env)
        assert as_json.exit_code == 0
        report = json.loads(as_json.stdout)
        assert report["level"] in ("green", "amber")
        assert {c["name"] for c in report["checks"]} >= set(found)
    finally:
        server.stop()


def test_a_broken_setup_says_what_is_wrong_one_line_each_and_exits_1(
    emulator: Emulator, make_app: Any, settings: dict[str, Any], tmp_path: Any
) -> None:
    # A destination that refuses connections: every notification ends as a dead letter.
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        port = refusing.getsockname()[1]
        routes = one_route_file(tmp_path, f"http://127.0.0.1:{port}/hook")
        app = make_app(routes_file=str(routes), **FAST_DELIVERY)
        state = app.app.extensions["ninjahook"]
        with app.test_client() as client:
            deliver(client, minimal_activity(501))
        settle_deliveries(state)
    # The only delivery arrived two hours ago.
    with state.db.begin() as conn:
        conn.execute(sa.update(activities).values(received_at=time.time() - 2 * 3600))

    env = {**ninjaone_env(emulator, settings), "NINJAONE_CLIENT_SECRET": "wrong-secret"}
    failed = run_cli(["backfill"], env)
    assert failed.exit_code == 1
    result = run_cli(["status"], env)
    assert result.exit_code == 1, result.output
    found = lines(result.stdout)
    assert found["NinjaOne API"][0] == "red"
    assert "rejected the client credentials" in found["NinjaOne API"][1]
    assert found["Backfill"][0] == "red"
    assert found["Backfill"][1].startswith("failed ")
    assert "rejected the client credentials" in found["Backfill"][1]
    assert found["Last delivery"][0] == "amber"
    assert found["Last delivery"][1].startswith("no delivery for 2h")
    assert found["Dead letters"][0] == "amber"
    assert found["Dead letters"][1].startswith("1 notifications failed for good")
    assert found["NinjaOne webhook"][0] == "amber"  # never configured from here
    assert result.stdout.rstrip().splitlines()[-1] == "overall: red"
    # One line per check, nothing wrapped.
    assert len(result.stdout.strip().splitlines()) == len(found) + 1

    report = json.loads(run_cli(["status", "--json"], env).stdout)
    assert report["level"] == "red"


def test_no_delivery_for_a_day_is_red(make_app: Any) -> None:
    app = make_app()
    state = app.app.extensions["ninjahook"]
    with app.test_client() as client:
        deliver(client, minimal_activity(601))
    with state.db.begin() as conn:
        conn.execute(sa.update(activities).values(received_at=time.time() - 26 * 3600))
    report = service.status_report(state)
    (check,) = [c for c in report.checks if c.name == "Last delivery"]
    assert check.level == "red"
    assert check.summary.startswith("no delivery for 1d")
    assert not report.ok
    # Without credentials, the API line says recovery is off (amber), not an error.
    (api,) = [c for c in report.checks if c.name == "NinjaOne API"]
    assert api.level == "amber" and "NINJAONE_CLIENT_ID" in api.summary


def test_disk_thresholds(monkeypatch: pytest.MonkeyPatch, state: Any) -> None:
    """Free space below 1 GiB is amber, below 100 MiB red (shutil.disk_usage reports)."""
    import shutil

    for free, level in (
        (2 * service.GIB, "green"),
        (500 * service.MIB, "amber"),
        (50 * service.MIB, "red"),
    ):

        def usage(_path: Any, free: int = free) -> Any:
            return shutil._ntuple_diskusage(10 * free, 9 * free, free)

        monkeypatch.setattr(shutil, "disk_usage", usage)
        (disk,) = [c for c in service.status_report(state).checks if c.name == "Disk"]
        assert disk.level == level, disk


def test_get_status_needs_the_read_token_and_matches_the_spec(
    emulator: Emulator, make_app: Any
) -> None:
    # validate_responses is on (conftest settings): the body is checked against webhook.yaml.
    app = make_app(**credentials(emulator))
    with app.test_client() as client:
        deliver(client, minimal_activity(701))
        assert client.get("/status").status_code == 401
        r = client.get("/status", headers=API_HEADERS)
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["level"] in ("green", "amber", "red")
        by_name = {c["name"]: c for c in report["checks"]}
        assert by_name["Last delivery"]["level"] == "green"
        assert by_name["NinjaOne API"]["level"] == "green"
        assert by_name["Disk"]["summary"]


def test_the_dashboard_shows_the_status_panel(make_app: Any) -> None:
    app = make_app()
    with app.test_client() as client:
        deliver(client, minimal_activity(801))
        page = client.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        login = client.post(
            "/login", data={"token": API_TOKEN, "csrf": csrf.group(1)}, follow_redirects=False
        )
        assert login.status_code == 303
        html = client.get("/").text
    assert 'id="status"' in html
    panel = html[html.index('id="status"') :]
    for name in ("NinjaOne webhook", "Last delivery", "Backfill", "Dead letters", "Disk"):
        assert f'<span class="name">{name}</span>' in panel
    assert re.search(
        r'data-level="green">\s*<span class="level">green</span>\s*'
        r'<span class="name">Last delivery</span>',
        panel,
    )


def test_a_disabled_webhook_is_red(
    emulator: Emulator, settings: dict[str, Any], state: Any
) -> None:
    env = ninjaone_env(emulator, settings)
    assert run_cli(["configure", "--url", "https://hooks.example.com"], env).exit_code == 0
    disabled = run_cli(["disable"], env)
    assert disabled.exit_code == 0, disabled.output
    result = run_cli(["status", "--no-probe"], env)
    assert result.exit_code == 1
    level, summary = lines(result.stdout)["NinjaOne webhook"]
    assert level == "red" and summary.startswith("turned off by `ninjahook disable`")
    assert "NinjaOne API" not in lines(result.stdout)  # --no-probe
