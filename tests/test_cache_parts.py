"""The parts of the self-maintaining cache: the shared rate limit, the bounded notes of
the ingest stage, the settings and schedule, and the emulator's change events and
detail endpoints."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from app.config import ConfigError, load_config
from app.entities.service import CacheNeeds, Need
from app.ninjaone.client import Credentials, NinjaOneClient, RateLimiter, shared_limiter
from app.ninjaone.emulator import Emulator, Fault
from app.ninjaone.sync import SYNC_TASK
from app.services import build_state, periodic_tasks
from tests.support import load_reference

API = load_reference("ninjaone-api-v2-subset.json")
ENUMS = load_reference("ninjaone-enums.json")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_rate_limiter_allows_a_second_of_burst_then_paces() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5.0, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        assert limiter.acquire() == 0.0
    assert limiter.acquire() == pytest.approx(0.2)
    assert limiter.acquire() == pytest.approx(0.2)
    clock.now += 10  # idle: the burst refills, never beyond one second's worth
    assert [limiter.acquire() for _ in range(5)] == [0.0] * 5
    assert limiter.acquire() == pytest.approx(0.2)


def test_a_pause_holds_every_caller_back() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100.0, clock=clock, sleep=clock.sleep)
    limiter.pause(7.0)
    assert limiter.acquire() == pytest.approx(7.0)
    assert limiter.acquire() == 0.0


def test_one_limiter_per_process_and_rate() -> None:
    assert shared_limiter(5.0) is shared_limiter(5.0)
    assert shared_limiter(5.0) is not shared_limiter(2.0)


def test_a_429_retry_after_pauses_the_shared_limiter() -> None:
    with Emulator() as emu:
        clock = FakeClock()
        limiter = RateLimiter(1000.0, clock=clock, sleep=clock.sleep)
        creds = Credentials(emu.url, emu.client_id, emu.client_secret)
        with NinjaOneClient(creds, sleep=clock.sleep, limiter=limiter) as client:
            client.access_token()
            emu.inject(Fault(429, retry_after="7"))
            assert client.get_json("/v2/organizations")
        # The client waited 7 s (its own retry), and the limiter was paused as long: the
        # retry found the pause over, so nothing waited twice.
        assert clock.slept == [7.0]


def test_device_and_organization_details_have_ninjaones_shapes() -> None:
    def schema(path: str, status: str) -> dict[str, Any]:
        found: dict[str, Any] = API["paths"][path]["get"]["responses"][status]["content"][
            "application/json"
        ]["schema"]
        return found

    with Emulator(seed=3) as emu:
        creds = Credentials(emu.url, emu.client_id, emu.client_secret)
        with NinjaOneClient(creds) as client:
            device_id = emu.world.devices[0]["id"]
            device = client.device(device_id)
            jsonschema.Draft7Validator(schema("/v2/device/{id}", "200")).validate(device)
            assert device is not None and device["references"]["organization"]["id"] == 1
            org = client.organization(1)
            jsonschema.Draft7Validator(schema("/v2/organization/{id}", "default")).validate(org)
            assert org is not None and org["name"] == emu.world.organization(1)["name"]
            locations = client.organization_locations(1)
            jsonschema.Draft7Validator(
                schema("/v2/organization/{id}/locations", "default")
            ).validate(locations)
            assert [loc["id"] for loc in locations or []] == [
                loc["id"] for loc in emu.world.locations if loc["organizationId"] == 1
            ]
            assert client.organization(999) is None
            assert client.organization_locations(999) is None
            emu.delete_device(device_id)
            assert client.device(device_id) is None
            assert device_id not in {d["id"] for d in client.get_json("/v2/devices")}


def test_the_emulator_reports_changes_with_real_status_codes() -> None:
    known = set(ENUMS["statusCode"])
    with Emulator(seed=3) as emu:
        device = emu.world.devices[2]
        events = [
            emu.rename_device(device["id"], "NEW-NAME"),
            emu.move_device(device["id"], emu.world.locations[-1]["id"]),
            emu.rename_organization(2, "Renamed org"),
            emu.rename_location(emu.world.locations[0]["id"], "Renamed site"),
            emu.delete_device(device["id"]),
        ]
        assert [e["statusCode"] for e in events] == [
            "NODE_UPDATED",
            "NODE_UPDATED",
            "CLIENT_UPDATED",
            "LOCATION_UPDATED",
            "NODE_DELETED",
        ]
        assert {e["statusCode"] for e in events} <= known
        assert {e["activityType"] for e in events} == {"SYSTEM"}
        assert [e.get("deviceId") for e in events] == [device["id"]] * 2 + [None] * 2 + [
            device["id"]
        ]
        assert emu.activity_ids == sorted(emu.activity_ids)
        assert emu.world.organization(2)["name"] == "Renamed org"
        # No follow-up (a RESET, a script's end) for the deleted device afterwards.
        later = emu.produce(40)
        assert device["id"] not in {a.get("deviceId") for a in later}


def test_the_status_codes_the_cache_acts_on_are_ninjaones() -> None:
    from app.entities.service import CHANGE_EVENTS

    assert set(CHANGE_EVENTS) <= set(ENUMS["statusCode"])


def test_a_restarted_emulator_never_reuses_an_activity_id() -> None:
    # A burst (faster than any real tenant), then a restart at once, with the same seed.
    first = Emulator(seed=9, history=2000)
    second = Emulator(seed=9, history=5)
    sent, again = first.activities, second.activities
    assert min(a["id"] for a in again) > max(a["id"] for a in sent)
    assert max(a["id"] for a in again) < 2**53  # exact in every JSON reader
    assert json.loads(json.dumps(again)) == again


def test_the_stage_notes_are_bounded_and_deduplicated() -> None:
    needs = CacheNeeds(capacity=3, known_capacity=2)
    needs.add([Need("miss", "device", 1), Need("miss", "device", 1), Need("miss", "device", 2)])
    needs.add([Need("refresh", "device", 1), Need("miss", "device", 3)])
    assert needs.queued() == 3 and needs.dropped == 1
    assert [(n.action, n.id) for n in needs.take()] == [
        ("miss", 1),
        ("miss", 2),
        ("refresh", 1),
    ]
    for device_id in (1, 2, 3):
        needs.remember(device_id)
    assert len(needs.known) <= 2 and 3 in needs.known


def test_sync_interval_and_rate_settings(tmp_path: Any) -> None:
    base = {"instance_path": str(tmp_path), "webhook_tokens": "whk_" + "a" * 28}
    creds = {
        "ninjaone_base_url": "http://127.0.0.1:9",
        "ninjaone_client_id": "id",
        "ninjaone_client_secret": "secret",
    }
    assert load_config(base).sync_interval == 6 * 3600
    assert load_config(base).ninjaone_rate == 5.0
    assert load_config({**base, "sync_interval": "off"}).sync_interval == 0
    assert load_config({**base, "ninjaone_rate": "0.5"}).ninjaone_rate == 0.5
    for bad in ("0", "-1", "fast", "inf"):
        with pytest.raises(ConfigError, match="NINJAHOOK_NINJAONE_RATE"):
            load_config({**base, "ninjaone_rate": bad})

    def sync_tasks(**overrides: str) -> list[float]:
        state = build_state(load_config({**base, **overrides}))
        try:
            return [t.interval for t in periodic_tasks(state) if t.name == SYNC_TASK]
        finally:
            state.db.dispose()

    assert sync_tasks() == []  # no credentials: nothing to sync from
    assert sync_tasks(**creds) == [6 * 3600.0]
    assert sync_tasks(**creds, sync_interval="15m") == [900.0]
    assert sync_tasks(**creds, sync_interval="0") == []
