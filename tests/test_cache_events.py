"""Every change event the entity cache acts on, checked against NinjaOne's statusCode list
(tests/reference/ninjaone-enums.json), and the ones the emulator can now make end to end:
NODE_CREATED, the rejections, CLIENT_DELETED and LOCATION_DELETED reach the cache."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from app.background import Scheduler
from app.entities.service import (
    CHANGE_EVENTS,
    DEVICE_DELETE_EVENTS,
    DEVICE_REFRESH_EVENTS,
    LOCATION_EVENTS,
    ORGANIZATION_EVENTS,
)
from app.ninjaone.emulator import Emulator
from app.ninjaone.sync import SYNC_TASK
from app.services import periodic_tasks
from tests.support import condition_activity
from tests.support.paths import load_reference
from tests.test_cache_refresh import Receiver, eventually

STATUS_CODES: frozenset[str] = frozenset(load_reference("ninjaone-enums.json")["statusCode"])

# The issue's list: these refresh the device ("and the approvals"), these mark it
# deleted ("and the rejections"), these refresh or mark organizations and locations.
REFRESHING = {"NODE_CREATED", "NODE_UPDATED", "NODE_RE_ENROLLED", "NODE_IDENTIFICATION_UPDATED"}
DELETING = {"NODE_DELETED"}
ORGANIZATION = {"CLIENT_CREATED", "CLIENT_UPDATED", "CLIENT_DELETED"}
LOCATION = {"LOCATION_CREATED", "LOCATION_UPDATED", "LOCATION_DELETED"}


def test_every_event_the_issue_names_is_a_ninjaone_status_and_is_handled() -> None:
    approvals = {s for s in STATUS_CODES if re.fullmatch(r"NODE_\w*_APPROVED", s)}
    rejections = {s for s in STATUS_CODES if re.fullmatch(r"NODE_\w*_REJECTED", s)}
    assert approvals == {"NODE_MANUALLY_APPROVED", "NODE_AUTOMATICALLY_APPROVED"}
    assert rejections == {
        "NODE_REGISTRATION_REJECTED",
        "NODE_MANUALLY_REJECTED",
        "NODE_AUTOMATICALLY_REJECTED",
    }
    for names in (REFRESHING, DELETING, ORGANIZATION, LOCATION):
        assert names <= STATUS_CODES
    assert REFRESHING | approvals <= DEVICE_REFRESH_EVENTS
    assert DELETING | rejections <= DEVICE_DELETE_EVENTS
    assert ORGANIZATION == ORGANIZATION_EVENTS
    assert LOCATION == LOCATION_EVENTS
    # No event is both, and every one the cache acts on is NinjaOne's own (no typo).
    assert not DEVICE_REFRESH_EVENTS & DEVICE_DELETE_EVENTS
    assert CHANGE_EVENTS <= STATUS_CODES


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=33) as emu:
        yield emu


@pytest.fixture
def receiver(emulator: Emulator, make_app: Any, settings: dict[str, Any]) -> Iterator[Receiver]:
    live = Receiver(emulator, make_app, settings)
    yield live
    live.close()


def cache_everything(receiver: Receiver) -> Scheduler:
    """Run the periodic sync once: the whole tenant is cached."""
    tasks = [t for t in periodic_tasks(receiver.state) if t.name == SYNC_TASK]
    scheduler = Scheduler(receiver.state, tasks)
    assert scheduler.run_due() == [SYNC_TASK]
    return scheduler


def cached(receiver: Receiver, kind: str) -> dict[int, dict[str, Any]]:
    return {item["id"]: item for item in receiver.get(f"/{kind}?limit=100")["items"]}


def test_node_created_caches_the_new_device(receiver: Receiver, emulator: Emulator) -> None:
    location = emulator.world.locations[2]
    before = {d["id"] for d in emulator.world.devices}
    event = emulator.create_device(location["id"], "NEW-WS-01")
    assert (event["activityType"], event["statusCode"]) == ("SYSTEM", "NODE_CREATED")
    device_id = event["deviceId"]
    assert device_id not in before and device_id > max(before)

    device = eventually(lambda: receiver.device(device_id))
    assert device["displayName"] == "NEW-WS-01"
    assert device["refreshedBy"] == "event" and device["deleted"] is False
    assert (device["organizationId"], device["locationId"]) == (
        location["organizationId"],
        location["id"],
    )
    org = emulator.world.organization(location["organizationId"])
    # Its organization and location were fetched for it too: the names show.
    named = eventually(
        lambda: (d := receiver.device(device_id)) and d["locationName"] is not None and d
    )
    assert (named["organizationName"], named["locationName"]) == (org["name"], location["name"])
    # The event itself is listed with the names (it carries only deviceId).
    record = receiver.get(f"/activities/{event['id']}")
    assert (record["deviceName"], record["organizationName"], record["locationName"]) == (
        "NEW-WS-01",
        org["name"],
        location["name"],
    )


@pytest.mark.parametrize(
    "status",
    ["NODE_REGISTRATION_REJECTED", "NODE_MANUALLY_REJECTED", "NODE_AUTOMATICALLY_REJECTED"],
)
def test_a_rejection_marks_the_device_deleted(
    receiver: Receiver, emulator: Emulator, status: str
) -> None:
    device = emulator.world.devices[3]
    receiver.post(condition_activity(1, device_id=device["id"], expand=False))
    assert eventually(lambda: receiver.device(device["id"]))["deleted"] is False
    event = emulator.reject_device(device["id"], status)
    assert (event["statusCode"], event["deviceId"]) == (status, device["id"])

    rejected = eventually(lambda: (d := receiver.device(device["id"])) and d["deleted"] and d)
    assert rejected["deletedAt"] and rejected["refreshedBy"] == "event"
    assert rejected["displayName"] == device["displayName"]  # kept, with its name
    # The activity from before still shows it.
    assert receiver.get("/activities/1")["deviceName"] == device["displayName"]


def test_client_deleted_marks_the_organization_and_its_locations_deleted(
    receiver: Receiver, emulator: Emulator
) -> None:
    cache_everything(receiver)
    org = emulator.world.organizations[1]
    its_locations = {
        loc["id"] for loc in emulator.world.locations if loc["organizationId"] == org["id"]
    }
    assert its_locations
    assert cached(receiver, "organizations")[org["id"]]["deleted"] is False
    event = emulator.delete_organization(org["id"])
    assert event["statusCode"] == "CLIENT_DELETED" and "deviceId" not in event

    def gone() -> dict[int, dict[str, Any]] | None:
        """the organization and its locations are marked deleted"""
        orgs, locations = cached(receiver, "organizations"), cached(receiver, "locations")
        done = orgs[org["id"]]["deleted"] and all(locations[i]["deleted"] for i in its_locations)
        return orgs if done else None

    orgs = eventually(gone)
    assert orgs[org["id"]]["name"] == org["name"]  # kept, with its name
    assert orgs[org["id"]]["refreshedBy"] == "event" and orgs[org["id"]]["deletedAt"]
    assert [i for i, o in orgs.items() if o["deleted"]] == [org["id"]]
    locations = cached(receiver, "locations")
    assert {i for i, loc in locations.items() if loc["deleted"]} == its_locations


def test_location_deleted_marks_the_location_deleted(
    receiver: Receiver, emulator: Emulator
) -> None:
    cache_everything(receiver)
    location = emulator.world.locations[0]
    assert cached(receiver, "locations")[location["id"]]["deleted"] is False
    event = emulator.delete_location(location["id"])
    assert event["statusCode"] == "LOCATION_DELETED" and "deviceId" not in event

    gone = eventually(
        lambda: (loc := cached(receiver, "locations")[location["id"]])["deleted"] and loc
    )
    assert gone["name"] == location["name"] and gone["refreshedBy"] == "event"
    locations = cached(receiver, "locations")
    assert [i for i, loc in locations.items() if loc["deleted"]] == [location["id"]]
    # The organizations' list is not touched by a location event.
    assert not any(o["deleted"] for o in cached(receiver, "organizations").values())
