"""Gap recovery: `backfill` stores what NinjaOne has and deliveries missed, exactly once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.background import Scheduler
from app.config import load_config
from app.ninjaone.emulator import Emulator
from app.services import build_state, periodic_tasks
from app.storage.tables import activities
from tests.support import (
    API_HEADERS,
    LiveServer,
    condition_activity,
    deliver,
    free_port,
    ninjaone_env,
    run_cli,
)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=11, history=5) as emu:
        yield emu


@pytest.fixture
def env(emulator: Emulator, settings: dict[str, Any]) -> dict[str, str]:
    return ninjaone_env(emulator, settings)


def stored(state: Any) -> dict[int, Any]:
    with state.db.connect() as conn:
        return {r.id: r for r in conn.execute(sa.select(activities))}


def configure_unreachable(env: dict[str, str]) -> None:
    """Point the webhook at a closed port: every delivery fails, like a receiver that is down."""
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli(["configure", "--url", url, "--allow-http"], env)
    assert result.exit_code == 0, result.output


def test_backfill_stores_what_was_missed_since_configure(
    emulator: Emulator, env: dict[str, str], state: Any
) -> None:
    configure_unreachable(env)
    produced = emulator.produce(30)
    assert {d.outcome for d in emulator.deliveries} == {"failed"}

    result = run_cli(["backfill", "--page-size", "10"], env)
    assert result.exit_code == 0, result.output
    assert "backfill: 30 fetched, 30 new, 0 already stored" in result.stdout

    rows = stored(state)
    # The history before `configure` is not this receiver's to recover.
    assert sorted(rows) == [a["id"] for a in produced]
    for activity in produced:
        row = rows[activity["id"]]
        assert row.source == "backfill"
        assert bytes(row.raw) == json.dumps(activity, separators=(",", ":")).encode()
        assert (row.activity_type, row.status_code) == (
            activity["activityType"],
            activity["statusCode"],
        )


def test_backfill_is_idempotent_and_since_refetches(
    emulator: Emulator, env: dict[str, str], state: Any
) -> None:
    configure_unreachable(env)
    produced = emulator.produce(12)
    assert run_cli(["backfill"], env).exit_code == 0
    again = run_cli(["backfill"], env)
    assert "backfill: 0 fetched, 0 new, 0 already stored" in again.stdout
    since = run_cli(["backfill", "--since", str(produced[0]["activityTime"])], env)
    assert since.exit_code == 0, since.output
    assert "backfill: 12 fetched, 0 new, 12 already stored" in since.stdout
    assert len(stored(state)) == 12


def test_without_a_checkpoint_backfill_starts_after_the_newest_stored_id(
    emulator: Emulator, env: dict[str, str], client: Any, state: Any
) -> None:
    newest = emulator.activities[-2]
    deliver(client, newest)
    result = run_cli(["backfill"], env)
    assert result.exit_code == 0, result.output
    assert "backfill: 1 fetched, 1 new" in result.stdout
    assert sorted(stored(state)) == [newest["id"], emulator.activity_ids[-1]]


def test_empty_database_records_a_starting_point_and_stores_nothing(
    emulator: Emulator, env: dict[str, str], state: Any
) -> None:
    first = run_cli(["backfill"], env)
    assert first.exit_code == 0, first.output
    assert "nothing stored yet" in first.stdout and stored(state) == {}
    produced = emulator.produce(3)
    second = run_cli(["backfill"], env)
    assert "backfill: 3 fetched, 3 new" in second.stdout
    assert sorted(stored(state)) == [a["id"] for a in produced]


def test_since_accepts_an_age_and_rejects_nonsense(env: dict[str, str], state: Any) -> None:
    result = run_cli(["backfill", "--since", "2d"], env)
    assert result.exit_code == 0, result.output
    assert "backfill: 5 fetched, 5 new" in result.stdout
    bad = run_cli(["backfill", "--since", "yesterday-ish"], env)
    assert bad.exit_code == 2
    assert "--since" in bad.stderr and "expected ISO 8601" in bad.stderr


def test_failures_end_in_one_line_and_runs_are_counted(
    emulator: Emulator, env: dict[str, str], client: Any
) -> None:
    assert run_cli(["backfill"], env).exit_code == 0
    env["NINJAONE_CLIENT_SECRET"] = "not-the-secret-at-all"
    result = run_cli(["backfill"], env)
    assert result.exit_code == 1
    assert "NinjaOne rejected the client credentials" in result.stderr
    assert "not-the-secret-at-all" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    metrics = client.get("/metrics", headers=API_HEADERS).text
    assert 'ninjahook_backfill_runs_total{outcome="ok"} 1.0' in metrics
    assert 'ninjahook_backfill_runs_total{outcome="failed"} 1.0' in metrics


def test_periodic_backfill_runs_in_the_server_only_when_configured(
    emulator: Emulator, make_app: Any, settings: dict[str, Any]
) -> None:
    creds = {
        "ninjaone_base_url": emulator.url,
        "ninjaone_client_id": emulator.client_id,
        "ninjaone_client_secret": emulator.client_secret,
    }
    base = {k: v for k, v in settings.items() if k != "validate_responses"}
    # Interval explicitly off; an interval without credentials. (Not set with credentials
    # is on: tests/test_recovery_default.py.)
    for overrides in ({**creds, "backfill_interval": "off"}, {"backfill_interval": "15m"}):
        idle = build_state(load_config({**base, **overrides}))
        assert "ninjaone-backfill" not in [task.name for task in periodic_tasks(idle)]
        idle.db.dispose()

    app = make_app(backfill_interval="15m", **creds)
    scheduler = app.app.extensions["ninjahook.scheduler"]
    task = next(t for t in scheduler.tasks if t.name == "ninjaone-backfill")
    assert task.interval == 900
    state = app.app.extensions["ninjahook"]
    assert "ninjaone-backfill" in scheduler.run_due()
    assert stored(state) == {}  # first run: records NinjaOne's newest id as the start
    produced = emulator.produce(4)
    # Another worker (its own scheduler, same database) sees that the task just ran.
    assert Scheduler(state, [task]).run_due() == []
    task.run(state)
    assert sorted(stored(state)) == [a["id"] for a in produced]


def api_activities(base: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/activities?limit=500", headers=API_HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_done_when_every_produced_activity_is_stored_exactly_once(
    make_app: Any, settings: dict[str, Any]
) -> None:
    """configure → deliveries with names → receiver down while NinjaOne produces, with
    drops and duplicates → restart → backfill: everything once, named from the cache."""
    with Emulator(seed=21, history=8, drop=0.25, duplicate=0.25) as emu:
        env = ninjaone_env(emu, settings)
        port = free_port()
        server = LiveServer(make_app(), port=port).start()
        configured = run_cli(
            ["configure", "--url", f"http://127.0.0.1:{port}", "--allow-http"]
            + ["--expand", "device,organization,location"]
            + [f"--activity={t}" for t in ("CONDITION", "SYSTEM", "ACTION", "PATCH_MANAGEMENT")],
            env,
        )
        assert configured.exit_code == 0, configured.output

        produced = emu.produce(25)
        delivered_while_up = {d.activity_id for d in emu.deliveries if d.outcome == "delivered"}
        shown = api_activities(server.url)
        assert {a["id"] for a in shown} == delivered_while_up
        for record in shown:
            device = emu.world.expanded_device(record["payload"]["deviceId"])
            assert device is not None
            assert record["deviceName"] == device["displayName"]
            assert record["organizationName"] == device["references"]["organization"]["name"]
            assert record["locationName"] == device["references"]["location"]["name"]

        server.stop()
        before = len(emu.deliveries)
        produced += emu.produce(15)
        assert {d.outcome for d in emu.deliveries[before:]} == {"failed", "dropped"}

        app = make_app()
        server = LiveServer(app, port=port).start()
        try:
            produced += emu.produce(10)
            backfilled = run_cli(["backfill", "--page-size", "10"], env)
            assert backfilled.exit_code == 0, backfilled.output
            assert run_cli(["sync"], env).exit_code == 0
            shown = api_activities(server.url)
        finally:
            server.stop()

        outcomes = Counter(d.outcome for d in emu.deliveries)
        copies = Counter(d.activity_id for d in emu.deliveries if d.outcome == "delivered")
        # The run exercised what it claims to: drops, duplicates and a receiver that was down.
        assert outcomes["dropped"] > 0 and outcomes["failed"] > 0
        assert any(n == 2 for n in copies.values())

        produced_ids = sorted(a["id"] for a in produced)
        rows = stored(app.app.extensions["ninjahook"])
        assert sorted(rows) == produced_ids
        assert sorted(a["id"] for a in shown) == produced_ids
        sources = {i: r.source for i, r in rows.items()}
        assert {i for i, s in sources.items() if s == "webhook"} == set(copies)
        assert f"{len(produced) - len(copies)} new" in backfilled.stdout
        for record in shown:
            device = emu.world.expanded_device(record["deviceId"])
            assert device is not None
            assert record["deviceName"] == device["displayName"]
            assert record["organizationName"] == device["references"]["organization"]["name"]


def test_backfilled_activity_runs_the_same_hooks_as_a_delivery(
    emulator: Emulator, env: dict[str, str], client: Any, state: Any
) -> None:
    """A backfilled activity without expansion gets names through the cached device."""
    configure_unreachable(env)
    produced = emulator.produce(1)[0]
    device = emulator.world.expanded_device(produced["deviceId"])
    assert device is not None
    deliver(
        client,
        condition_activity(
            1,
            device_id=device["id"],
            organization_id=device["organizationId"],
            location_id=device["locationId"],
        ),
    )
    assert run_cli(["backfill"], env).exit_code == 0
    record = client.get(f"/activities/{produced['id']}", headers=API_HEADERS).json()
    assert record["source"] == "backfill"
    assert record["deviceName"] == f"SRV-{device['id']:03d}"
