"""The entity cache: filled by deliveries and `sync`, newer data wins, served by the read API."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.entities import service as entities
from app.ingest.pipeline import Stage, StoredActivity
from app.ingest.service import ingest_activity
from app.ninjaone.emulator import Emulator
from tests.support import (
    API_HEADERS,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    body,
    condition_activity,
    deliver,
    minimal_activity,
    ninjaone_env,
    recorded_statements,
    run_cli,
)


def get(client: Any, path: str) -> Any:
    response = client.get(path, headers=API_HEADERS)
    assert response.status_code == 200, response.text
    return response.json()


def renamed(payload: dict[str, Any], device: str, org: str, location: str) -> dict[str, Any]:
    payload["device"]["displayName"] = device
    payload["device"]["references"]["organization"]["name"] = org
    payload["device"]["references"]["location"]["name"] = location
    return payload


def test_delivery_fills_the_cache_and_the_read_api_serves_it(client: Any) -> None:
    deliver(client, condition_activity(1, device_id=42, organization_id=7, location_id=9))
    device = get(client, "/devices/42")
    assert device["displayName"] == "SRV-042"
    assert (device["organizationId"], device["organizationName"]) == (7, "Org 7")
    assert (device["locationId"], device["locationName"]) == (9, "Site 9")
    assert device["nodeClass"] == "WINDOWS_SERVER" and device["offline"] is False
    assert device["lastContact"] == 1764299990.5
    assert "references" not in device["raw"] and device["raw"]["systemName"] == "SRV-042"
    assert get(client, "/organizations")["items"][0] | {
        "updatedAt": None,
        "refreshedAt": None,
        "raw": None,
    } == {
        "id": 7,
        "name": "Org 7",
        "description": None,
        "updatedAt": None,
        "deleted": False,
        "deletedAt": None,
        "refreshedAt": None,
        "refreshedBy": "webhook",
        "raw": None,
    }
    assert [
        (x["id"], x["name"], x["organizationId"]) for x in get(client, "/locations")["items"]
    ] == [(9, "Site 9", 7)]


def test_unknown_device_is_404(client: Any) -> None:
    response = client.get("/devices/999", headers=API_HEADERS)
    assert response.status_code == 404
    assert "no device with id 999" in response.json()["detail"]


def test_newer_data_wins_and_older_never_overwrites(client: Any) -> None:
    deliver(client, renamed(condition_activity(10, activity_time=2000.0), "NEW", "Org B", "Site B"))
    deliver(client, renamed(condition_activity(11, activity_time=1000.0), "OLD", "Org A", "Site A"))
    device = get(client, "/devices/42")
    assert (device["displayName"], device["organizationName"], device["locationName"]) == (
        "NEW",
        "Org B",
        "Site B",
    )
    deliver(
        client, renamed(condition_activity(12, activity_time=3000.0), "NEWER", "Org C", "Site C")
    )
    device = get(client, "/devices/42")
    assert (device["displayName"], device["organizationName"], device["locationName"]) == (
        "NEWER",
        "Org C",
        "Site C",
    )


def test_expanded_organization_and_location_are_cached_whole(client: Any) -> None:
    org = {"id": 7, "name": "Org 7", "description": "Dentists", "nodeApprovalMode": "MANUAL"}
    loc = {"id": 9, "name": "Site 9", "address": "1 Main St", "organizationId": 7}
    deliver(client, condition_activity(20, organization=org, location=loc))
    organization = get(client, "/organizations")["items"][0]
    assert organization["description"] == "Dentists" and organization["raw"] == org
    location = get(client, "/locations?organizationId=7")["items"][0]
    assert location["raw"] == loc
    assert get(client, "/locations?organizationId=8")["items"] == []


def test_a_reference_updates_the_name_but_keeps_the_description(client: Any) -> None:
    org = {"id": 7, "name": "Org 7", "description": "Dentists"}
    deliver(client, condition_activity(30, activity_time=1000.0, organization=org))
    payload = condition_activity(31, activity_time=2000.0)
    payload["device"]["references"]["organization"]["name"] = "Org 7 (renamed)"
    deliver(client, payload)
    organization = get(client, "/organizations")["items"][0]
    assert organization["name"] == "Org 7 (renamed)"
    assert organization["description"] == "Dentists" and organization["raw"] == org


def test_activities_carry_names_from_the_cache(client: Any) -> None:
    deliver(client, condition_activity(40, device_id=17, organization_id=3, location_id=5))
    # Delivered without expansion (a UI channel): names still come through the cached device.
    deliver(client, minimal_activity(41, deviceId=17))
    deliver(client, minimal_activity(42, deviceId=999))
    items = {a["id"]: a for a in get(client, "/activities")["items"]}
    names = {
        i: (a["deviceName"], a["organizationName"], a["locationName"]) for i, a in items.items()
    }
    assert names == {
        40: ("SRV-017", "Org 3", "Site 5"),
        41: ("SRV-017", "Org 3", "Site 5"),
        42: (None, None, None),
    }
    assert get(client, "/activities/41")["deviceName"] == "SRV-017"


def test_device_list_pages_and_filters(client: Any) -> None:
    for n, device_id in enumerate((5, 3, 8, 1)):
        deliver(
            client, condition_activity(50 + n, device_id=device_id, organization_id=device_id % 2)
        )
    first = get(client, "/devices?limit=3")
    assert [d["id"] for d in first["items"]] == [1, 3, 5]
    second = get(client, f"/devices?limit=3&cursor={first['nextCursor']}")
    assert [d["id"] for d in second["items"]] == [8] and second["nextCursor"] is None
    assert [d["id"] for d in get(client, "/devices?organizationId=0")["items"]] == [8]
    assert [d["id"] for d in get(client, "/devices?locationId=9")["items"]] == [1, 3, 5, 8]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=5) as emu:
        yield emu


def test_sync_loads_everything_and_counts_changes(
    emulator: Emulator, settings: dict[str, Any], client: Any
) -> None:
    env = ninjaone_env(emulator, settings)
    world = emulator.world
    first = run_cli(["sync", "--page-size", "4"], env)
    assert first.exit_code == 0, first.output
    assert f"│ organizations │ {len(world.organizations)} " in first.stdout
    devices = get(client, f"/devices?limit={len(world.devices) + 5}")["items"]
    assert [d["id"] for d in devices] == [d["id"] for d in world.devices]
    one = world.devices[3]
    cached = next(d for d in devices if d["id"] == one["id"])
    assert cached["displayName"] == one["displayName"]
    assert cached["organizationName"] == world.organization(one["organizationId"])["name"]
    assert cached["locationName"] == world.location(one["locationId"])["name"]
    assert cached["raw"] == one

    world.devices[0]["displayName"] = "RENAMED-01"
    second = run_cli(["sync"], env)
    assert second.exit_code == 0, second.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in second.stdout.splitlines()]
    counts = {row[0]: row[1:] for row in cells if row}
    assert counts["organizations"] == ["0", "0", str(len(world.organizations))]
    assert counts["devices"] == ["0", "1", str(len(world.devices) - 1)]
    assert get(client, f"/devices/{world.devices[0]['id']}")["displayName"] == "RENAMED-01"


def test_a_delivery_older_than_the_sync_does_not_roll_back(
    emulator: Emulator, settings: dict[str, Any], client: Any
) -> None:
    assert run_cli(["sync"], ninjaone_env(emulator, settings)).exit_code == 0
    device = emulator.world.devices[0]
    stale = condition_activity(
        60,
        device_id=device["id"],
        organization_id=device["organizationId"],
        location_id=device["locationId"],
        activity_time=1000.0,
    )
    deliver(client, stale)
    assert get(client, f"/devices/{device['id']}")["displayName"] == device["displayName"]


def test_concurrent_deliveries_keep_the_newest_data(server: Any) -> None:
    """Many workers writing the same organization, location and devices at once: every
    delivery is stored (no deadlock) and each device ends with its newest name."""
    payloads = []
    for n in range(24):
        # Times interleave across ids so the newest write is not simply the last one sent.
        payload = condition_activity(
            100 + n, device_id=1 + n % 3, activity_time=1000.0 + (n * 7) % 24
        )
        payload["device"]["displayName"] = f"name-at-{payload['activityTime']}"
        payloads.append(payload)

    def post(payload: dict[str, Any]) -> int:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            return http.post(
                INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS
            ).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(post, payloads)) == [200] * len(payloads)
    with httpx.Client(base_url=server.url, headers=API_HEADERS, timeout=30) as http:
        for device_id in (1, 2, 3):
            newest = max(p["activityTime"] for p in payloads if p["deviceId"] == device_id)
            cached = http.get(f"/devices/{device_id}").json()
            assert cached["displayName"] == f"name-at-{newest}"


ENTITY_TABLES = ("organizations", "locations", "devices")


def entity_statements(state: Any, payload: dict[str, Any]) -> list[str]:
    """The statements on cache tables that ingesting ``payload`` runs."""
    with recorded_statements(state.db.engine) as statements:
        assert ingest_activity(state, body(payload), payload).duplicate is False
    return [s for s in statements if any(table in s for table in ENTITY_TABLES)]


def test_one_guarded_upsert_per_entity_kind(state: Any) -> None:
    payload = condition_activity(
        60,
        organization={"id": 7, "name": "Org 7", "description": "Dentists"},
        location={"id": 9, "name": "Site 9", "organizationId": 7},
    )
    # The expanded organization and the device's reference to it are one row: one write.
    written = entity_statements(state, payload)
    assert [next(t for t in ENTITY_TABLES if t in s) for s in written] == list(ENTITY_TABLES)
    assert all("ON CONFLICT" in s and "observed_at <" in s for s in written)
    assert not any(s.lstrip().upper().startswith("SELECT") for s in written)


def test_an_activity_without_expansion_costs_the_cache_no_statement(state: Any) -> None:
    assert entity_statements(state, minimal_activity(61)) == []
    assert entity_statements(state, condition_activity(62, expand=False)) == []


def test_identical_data_no_newer_than_what_was_committed_is_not_written_again(
    client: Any, state: Any
) -> None:
    def at(activity_id: int, when: float, name: str = "SRV-042") -> dict[str, Any]:
        payload = condition_activity(activity_id, activity_time=when)
        payload["device"]["displayName"] = name
        return payload

    assert len(entity_statements(state, at(70, 2000.0))) == 3
    assert entity_statements(state, at(71, 2000.0)) == []  # same data, same time
    assert entity_statements(state, at(72, 1500.0)) == []  # same data, older
    # Same data but newer: observed_at must move on, so that a late delivery with other
    # data (below) still loses against it.
    assert len(entity_statements(state, at(73, 3000.0))) == 3
    # Only the device differs (the organization and location were committed newer): its
    # write reaches the database, whose guard keeps the newer name.
    (stale,) = entity_statements(state, at(74, 2500.0, name="STALE"))
    assert "devices" in stale
    assert get(client, "/devices/42")["displayName"] == "SRV-042"


def test_a_rolled_back_write_is_written_again(client: Any, state: Any) -> None:
    payload = condition_activity(80, activity_time=2000.0)
    stored = StoredActivity(id=80, source="webhook", received_at=2000.0, row={})
    hook = state.pipeline.stage("entities").run
    with pytest.raises(RuntimeError), state.db.begin() as conn:
        hook(conn, payload, stored)
        raise RuntimeError("the delivery's transaction fails after the hook")
    assert len(entity_statements(state, payload)) == 3
    assert get(client, "/devices/42")["displayName"] == "SRV-042"


def test_a_write_whose_commit_fails_is_written_again(client: Any, state: Any) -> None:
    # A deferred foreign key fails at COMMIT, after every statement (and the entity
    # hook's) succeeded: the case that fires no "rollback" event.
    with state.db.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE scratch_parent (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql(
            "CREATE TABLE scratch_child (id INTEGER PRIMARY KEY, parent_id INTEGER "
            "REFERENCES scratch_parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )

    def orphan(conn: Any, payload: dict[str, Any], stored: StoredActivity) -> None:
        conn.exec_driver_sql(f"INSERT INTO scratch_child VALUES ({stored.id}, -1)")

    try:
        state.pipeline.stages.append(Stage("orphan", orphan))
        payload = condition_activity(85, activity_time=2000.0)
        with pytest.raises(sa.exc.IntegrityError):
            ingest_activity(state, body(payload), payload)
        state.pipeline.stages.remove(Stage("orphan", orphan))
        assert len(entity_statements(state, payload)) == 3
        assert get(client, "/devices/42")["displayName"] == "SRV-042"
    finally:
        with state.db.begin() as conn:
            conn.exec_driver_sql("DROP TABLE scratch_child")
            conn.exec_driver_sql("DROP TABLE scratch_parent")


def test_the_written_entities_memory_is_bounded(state: Any) -> None:
    written = entities.WrittenEntities(capacity=4)
    written.attach(state.db.engine)
    state.pipeline.stages[:] = [Stage("entities", entities.cache_updater(written))]
    for n in range(10):
        ingest_activity(state, body(p := condition_activity(90 + n, device_id=n)), p)
    assert len(written._entries) == 4
    # The most recently written device is remembered; the first ones were evicted.
    assert written.is_current(("devices", 9), entities.device_row(p["device"]), 1764300000.0)
    assert not any(key == ("devices", 0) for key in written._entries)
