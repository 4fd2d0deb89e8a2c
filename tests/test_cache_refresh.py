"""The entity cache keeps itself current against the NinjaOne emulator, deliveries
unexpanded: misses are fetched in the background, change events refresh or mark
deleted, a 404 is asked for once, the periodic sync marks what vanished deleted."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.background import Scheduler
from app.ninjaone.emulator import Emulator
from app.ninjaone.sync import SYNC_TASK
from app.services import periodic_tasks
from tests.support import (
    API_HEADERS,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    LiveServer,
    body,
    condition_activity,
    minimal_activity,
    ninjaone_env,
    run_cli,
)

WAIT = 15.0


def eventually(check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """``check()``'s first truthy result, polled until ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {check.__doc__ or check}")
        time.sleep(0.05)


class Receiver:
    """The app on loopback with NinjaOne = the emulator, the webhook configured unexpanded."""

    def __init__(self, emulator: Emulator, make_app: Callable[..., Any], settings: dict[str, Any]):
        self.emulator = emulator
        self.app = make_app(
            ninjaone_base_url=emulator.url,
            ninjaone_client_id=emulator.client_id,
            ninjaone_client_secret=emulator.client_secret,
            sync_interval="1",
        )
        self.state = self.app.app.extensions["ninjahook"]
        self.server = LiveServer(self.app).start()
        self.http = httpx.Client(base_url=self.server.url, timeout=30)
        configured = run_cli(
            ["configure", "--url", self.server.url, "--allow-http", "--expand="]
            + [f"--activity={t}" for t in ("CONDITION", "SYSTEM", "ACTION", "PATCH_MANAGEMENT")],
            ninjaone_env(emulator, settings),
        )
        assert configured.exit_code == 0, configured.output
        assert emulator.webhook is not None and emulator.webhook["expand"] == []

    def get(self, path: str) -> Any:
        response = self.http.get(path, headers=API_HEADERS)
        assert response.status_code == 200, response.text
        return response.json()

    def device(self, device_id: int) -> dict[str, Any] | None:
        response = self.http.get(f"/devices/{device_id}", headers=API_HEADERS)
        return response.json() if response.status_code == 200 else None

    def post(self, payload: dict[str, Any]) -> None:
        response = self.http.post(INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS)
        assert response.status_code == 200, response.text

    def device_requests(self, device_id: int) -> int:
        with self.emulator._lock:
            return sum(
                r.startswith(f"GET /api/v2/device/{device_id}?") for r in self.emulator.api_requests
            )

    def close(self) -> None:
        self.http.close()
        self.server.stop()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=21) as emu:
        yield emu


@pytest.fixture
def receiver(
    emulator: Emulator, make_app: Callable[..., Any], settings: dict[str, Any]
) -> Iterator[Receiver]:
    live = Receiver(emulator, make_app, settings)
    yield live
    live.close()


def names_of(emulator: Emulator, device_id: int) -> tuple[str, str, str]:
    device = emulator.world.expanded_device(device_id)
    assert device is not None
    refs = device["references"]
    return device["displayName"], refs["organization"]["name"], refs["location"]["name"]


def test_an_unseen_device_is_fetched_and_its_activities_show_names(
    receiver: Receiver, emulator: Emulator
) -> None:
    produced = emulator.produce(12)
    assert all("device" not in a for a in produced)
    device_ids = {a["deviceId"] for a in produced}

    def named() -> list[dict[str, Any]] | None:
        """every activity shows its device, organization and location names"""
        items = receiver.get("/activities?limit=50")["items"]
        done = len(items) == len(produced) and all(
            (a["deviceName"], a["organizationName"], a["locationName"])
            == names_of(emulator, a["deviceId"])
            for a in items
        )
        return items if done else None

    eventually(named)
    # The stream's device approvals are change events: their device is fetched for them.
    evented = {a["deviceId"] for a in produced if a["activityType"] == "SYSTEM"}
    assert device_ids - evented
    for device_id in device_ids:
        cached = receiver.device(device_id)
        assert cached is not None
        assert cached["refreshedBy"] == ("event" if device_id in evented else "fetch")
        assert cached["refreshedAt"]
        assert cached["deleted"] is False and cached["deletedAt"] is None
        # NinjaOne's whole record, as GET /v2/device/{id} answered it (without references).
        assert cached["raw"] == emulator.world.device(device_id)
        # One fetch per device, however many of its activities arrived (a change event
        # after the miss's fetch is one more).
        expected = {1} if device_id not in evented else {1, 2}
        assert receiver.device_requests(device_id) in expected
    org_id = emulator.world.device(next(iter(device_ids)))["organizationId"]  # type: ignore[index]
    orgs = {o["id"]: o for o in receiver.get("/organizations")["items"]}
    assert orgs[org_id]["refreshedBy"] == "fetch"
    assert (
        orgs[org_id]["raw"]["nodeApprovalMode"]
        == emulator.world.organization(org_id)["nodeApprovalMode"]
    )
    locations = receiver.get(f"/locations?organizationId={org_id}")["items"]
    assert {loc["id"] for loc in locations} == {
        loc["id"] for loc in emulator.world.locations if loc["organizationId"] == org_id
    }


def test_a_rename_and_its_node_updated_reach_the_cache(
    receiver: Receiver, emulator: Emulator
) -> None:
    device_id = emulator.produce(1)[0]["deviceId"]
    eventually(lambda: receiver.device(device_id))
    event = emulator.rename_device(device_id, "RENAMED-01")
    assert (event["activityType"], event["statusCode"]) == ("SYSTEM", "NODE_UPDATED")

    def renamed() -> bool:
        """the device has its new name"""
        cached = receiver.device(device_id)
        return cached is not None and cached["displayName"] == "RENAMED-01"

    eventually(renamed)
    cached = receiver.device(device_id)
    assert cached is not None and cached["refreshedBy"] == "event"
    # A move is an update too: the new location and organization follow.
    target = next(
        loc
        for loc in emulator.world.locations
        if loc["organizationId"] != emulator.world.device(device_id)["organizationId"]  # type: ignore[index]
    )
    emulator.move_device(device_id, target["id"])
    moved = eventually(
        lambda: (d := receiver.device(device_id)) and d["locationName"] == target["name"] and d
    )
    assert moved["locationId"] == target["id"]
    assert moved["organizationId"] == target["organizationId"]
    assert moved["locationName"] == target["name"]


def test_node_deleted_marks_the_device_deleted_and_history_keeps_its_name(
    receiver: Receiver, emulator: Emulator
) -> None:
    earlier = emulator.produce(1)[0]
    device_id = earlier["deviceId"]
    name = names_of(emulator, device_id)[0]
    eventually(lambda: receiver.device(device_id))
    event = emulator.delete_device(device_id)
    assert event["statusCode"] == "NODE_DELETED"
    deleted = eventually(lambda: (d := receiver.device(device_id)) and d["deleted"] and d)
    assert deleted["deletedAt"] and deleted["refreshedBy"] == "event"
    assert deleted["displayName"] == name
    assert receiver.get(f"/activities/{earlier['id']}")["deviceName"] == name
    assert {a["deviceName"] for a in receiver.get("/activities")["items"]} == {name}
    # The API answers 404 for it now; neither an activity nor an event for it fetches it.
    before = receiver.device_requests(device_id)
    receiver.post(condition_activity(1, device_id=device_id, expand=False))
    receiver.post(minimal_activity(2, deviceId=device_id))
    # A later activity for a live device is handled after them (one queue, in order).
    other = next(d["id"] for d in emulator.world.devices)
    receiver.post(condition_activity(3, device_id=other, expand=False))
    eventually(lambda: receiver.device(other))
    assert receiver.device_requests(device_id) == before


def test_a_device_ninjaone_does_not_know_is_fetched_once(
    receiver: Receiver, emulator: Emulator
) -> None:
    unknown = 987_654
    # Activities without expansion and change events (an approval) alike.
    for n in range(10):
        receiver.post(condition_activity(100 + n, device_id=unknown, expand=False))
        receiver.post(minimal_activity(150 + n, deviceId=unknown))
    eventually(lambda: receiver.device_requests(unknown) >= 1)
    for n in range(10):
        receiver.post(condition_activity(200 + n, device_id=unknown, expand=False))
        receiver.post(minimal_activity(250 + n, deviceId=unknown))
    # Requests are handled in order: once a later device is cached, the storm is past.
    known = emulator.world.devices[0]["id"]
    receiver.post(condition_activity(300, device_id=known, expand=False))
    eventually(lambda: receiver.device(known))
    assert receiver.device_requests(unknown) == 1
    assert receiver.device(unknown) is None
    metrics = receiver.http.get("/metrics", headers=API_HEADERS).text
    assert 'ninjahook_entity_fetches_total{kind="device",outcome="not_found"} 1.0' in metrics
    assert 'ninjahook_entity_fetches_total{kind="device",outcome="ok"} 1.0' in metrics
    assert 'ninjahook_entity_misses_total{kind="device"} 2.0' in metrics


def test_organization_and_location_events_refresh_their_lists(
    receiver: Receiver, emulator: Emulator
) -> None:
    org_id, loc_id = emulator.world.organizations[1]["id"], emulator.world.locations[0]["id"]
    event = emulator.rename_organization(org_id, "Northwind (renamed)")
    assert event["statusCode"] == "CLIENT_UPDATED" and "deviceId" not in event

    def org_renamed() -> bool:
        """the organization has its new name"""
        orgs = {o["id"]: o for o in receiver.get("/organizations")["items"]}
        return org_id in orgs and orgs[org_id]["name"] == "Northwind (renamed)"

    eventually(org_renamed)
    orgs = receiver.get("/organizations")["items"]
    assert len(orgs) == len(emulator.world.organizations)
    assert {o["refreshedBy"] for o in orgs} == {"event"}
    assert emulator.rename_location(loc_id, "Main Street (renamed)")["statusCode"] == (
        "LOCATION_UPDATED"
    )

    def location_renamed() -> bool:
        """the location has its new name"""
        locs = {loc["id"]: loc for loc in receiver.get("/locations?limit=100")["items"]}
        return loc_id in locs and locs[loc_id]["name"] == "Main Street (renamed)"

    eventually(location_renamed)


def test_the_periodic_sync_marks_a_vanished_device_deleted(
    receiver: Receiver, emulator: Emulator
) -> None:
    state = receiver.state
    tasks = [t for t in periodic_tasks(state) if t.name == SYNC_TASK]
    assert [t.interval for t in tasks] == [1.0]
    scheduler = Scheduler(state, tasks)
    assert scheduler.run_due() == [SYNC_TASK]
    gone = emulator.world.devices[4]
    assert receiver.device(gone["id"])["refreshedBy"] == "sync"  # type: ignore[index]
    # Deleted without an event (a delivery NinjaOne dropped): only the sync can tell.
    emulator.world.devices.remove(gone)
    time.sleep(1.05)
    assert scheduler.run_due() == [SYNC_TASK]
    cached = receiver.device(gone["id"])
    assert cached is not None
    assert cached["deleted"] is True and cached["deletedAt"] and cached["refreshedBy"] == "sync"
    assert cached["displayName"] == gone["displayName"]
    devices = receiver.get("/devices?limit=100")["items"]
    assert len(devices) == len(emulator.world.devices) + 1
    assert [d["id"] for d in devices if d["deleted"]] == [gone["id"]]
    metrics = receiver.http.get("/metrics", headers=API_HEADERS).text
    assert 'ninjahook_cached_entities{kind="devices",state="deleted"} 1.0' in metrics
    assert (
        f'ninjahook_cached_entities{{kind="devices",state="cached"}} '
        f"{float(len(emulator.world.devices))}" in metrics
    )


def test_a_miss_costs_ingest_no_statement_and_is_fetched_after_the_commit(
    receiver: Receiver, emulator: Emulator
) -> None:
    from app.ingest.service import ingest_activity
    from tests.support import recorded_statements

    device_id = emulator.world.devices[7]["id"]
    payload = condition_activity(400, device_id=device_id, expand=False)
    with recorded_statements(receiver.state.db.engine) as statements:
        assert ingest_activity(receiver.state, body(payload), payload).duplicate is False
    tables = ("organizations", "locations", "devices")
    assert [s for s in statements if any(t in s for t in tables)] == []
    eventually(lambda: receiver.device(device_id))
    assert receiver.device_requests(device_id) == 1


def test_a_rolled_back_delivery_fetches_nothing(receiver: Receiver, emulator: Emulator) -> None:
    from app.ingest.service import store_in_transaction

    device_id = emulator.world.devices[9]["id"]
    payload = condition_activity(500, device_id=device_id, expand=False)
    with pytest.raises(RuntimeError), receiver.state.db.begin() as conn:
        store_in_transaction(receiver.state, conn, body(payload), payload, "webhook", time.time())
        raise RuntimeError("the transaction fails after the pipeline ran")
    # A committed activity for another device goes through the same queue afterwards.
    other = emulator.world.devices[10]["id"]
    receiver.post(condition_activity(502, device_id=other, expand=False))
    eventually(lambda: receiver.device(other))
    assert receiver.device_requests(device_id) == 0
    # The same device's next (committed) activity is noted again and fetched, once.
    receiver.post(condition_activity(501, device_id=device_id, expand=False))
    eventually(lambda: receiver.device(device_id))
    assert receiver.device_requests(device_id) == 1
