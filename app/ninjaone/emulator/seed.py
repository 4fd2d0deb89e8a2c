"""The emulator's world: organizations, locations, devices and a stream of activities.

Everything derives from one seed, so a test or a demo sees the same tenant every
time. Shapes follow NinjaOne's Public API v2 (see tests/reference): activity ids
grow but are sparse (ids are global across NinjaOne's tenants), ``activityTime``
is epoch seconds with a fraction, and optional fields are often absent.

Activity ids start from the clock (microseconds since the epoch, below 2**53 so any
JSON reader keeps them exact): an emulator restarted later never sends an id it sent
before, as long as it produced fewer than about 200,000 activities a second.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# (id, name, description, device-name prefix, approval mode, location names)
_ORGANIZATIONS: tuple[tuple[int, str, str, str, str, tuple[str, ...]], ...] = (
    (
        1,
        "Acme Dental Group",
        "Three dental practices",
        "ACME",
        "AUTOMATIC",
        ("Main Street", "Uptown"),
    ),
    (2, "Northwind Logistics", "Freight forwarding", "NWL", "MANUAL", ("HQ", "Warehouse 4")),
    (3, "Contoso Legal LLP", "Law firm", "CTSO", "AUTOMATIC", ("Downtown Office",)),
)
# (node class, name pattern, how many per location)
_DEVICE_KINDS: tuple[tuple[str, str, int], ...] = (
    ("WINDOWS_SERVER", "{p}-DC{n:02d}", 1),
    ("WINDOWS_WORKSTATION", "{p}-WS-{n:03d}", 3),
    ("MAC", "{p}-MBP-{n:02d}", 1),
    ("LINUX_SERVER", "{p}-NAS{n:02d}", 1),
)
# (sourceName, subject, message, severity, priority)
_CONDITIONS: tuple[tuple[str, str, str, str | None, str | None], ...] = (
    (
        "Disk Free Space < 10%",
        "Disk space low",
        "C: has {v}% free space (threshold 10%)",
        "MAJOR",
        "HIGH",
    ),
    (
        "CPU > 90% for 15 minutes",
        "CPU utilization high",
        "CPU at {v}% for 15 minutes",
        "MODERATE",
        "MEDIUM",
    ),
    (
        "Service 'Print Spooler' stopped",
        "Service stopped",
        "Print Spooler is not running",
        None,
        None,
    ),
    (
        "Device offline > 10 minutes",
        "Device offline",
        "No contact for {v} minutes",
        "CRITICAL",
        "HIGH",
    ),
)
_SCRIPTS: tuple[str, ...] = (
    "Clear Temp Files",
    "Restart Print Spooler",
    "Collect Event Logs",
    "Install Chrome",
)


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class World:
    """The emulated tenant. Build it with :func:`build_world`."""

    organizations: list[dict[str, Any]]
    locations: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    # The largest device id handed out so far (0: take it from ``devices``).
    last_device_id: int = 0

    def new_device_id(self) -> int:
        """An id no device of this tenant has had (NinjaOne never reuses one)."""
        self.last_device_id = max([self.last_device_id, *(d["id"] for d in self.devices)]) + 1
        return self.last_device_id

    def organization(self, org_id: int) -> dict[str, Any]:
        return next(o for o in self.organizations if o["id"] == org_id)

    def location(self, loc_id: int) -> dict[str, Any]:
        return next(loc for loc in self.locations if loc["id"] == loc_id)

    def device(self, device_id: int) -> dict[str, Any] | None:
        """The device, or None (never existed, or deleted)."""
        return next((d for d in self.devices if d["id"] == device_id), None)

    def expanded_device(self, device_id: int) -> dict[str, Any] | None:
        """The device as a webhook with ``expand: [device]`` carries it, or None."""
        device = next((d for d in self.devices if d["id"] == device_id), None)
        if device is None:
            return None
        org = self.organization(device["organizationId"])
        loc = self.location(device["locationId"])
        return {
            **device,
            "references": {
                "organization": {k: org[k] for k in ("id", "name", "description")},
                "location": {k: loc[k] for k in ("id", "name", "description")},
            },
        }


def build_world(seed: int, now: float) -> World:
    """Three organizations, their locations and about thirty devices."""
    rng = random.Random(seed)
    organizations: list[dict[str, Any]] = []
    locations: list[dict[str, Any]] = []
    devices: list[dict[str, Any]] = []
    next_location, next_device = 101, 1001
    for org_id, name, description, prefix, approval, location_names in _ORGANIZATIONS:
        organizations.append(
            {
                "id": org_id,
                "name": name,
                "description": description,
                "nodeApprovalMode": approval,
                "userData": {},
                "tags": [],
                "fields": {},
            }
        )
        counter = 1
        for location_name in location_names:
            location_id = next_location
            next_location += 1
            locations.append(
                {
                    "id": location_id,
                    "organizationId": org_id,
                    "name": location_name,
                    "address": f"{rng.randint(1, 999)} {location_name} Rd",
                    "description": f"{name}, {location_name}",
                    "userData": {},
                    "tags": [],
                    "fields": {},
                }
            )
            for node_class, pattern, count in _DEVICE_KINDS:
                for _ in range(count):
                    display = pattern.format(p=prefix, n=counter)
                    counter += 1
                    devices.append(
                        {
                            "id": next_device,
                            "organizationId": org_id,
                            "locationId": location_id,
                            "nodeClass": node_class,
                            "nodeRoleId": 1,
                            "rolePolicyId": 10,
                            "approvalStatus": "APPROVED",
                            "offline": rng.random() < 0.1,
                            "displayName": display,
                            "systemName": display,
                            "dnsName": f"{display.lower()}.{prefix.lower()}.local",
                            "netbiosName": display[:15],
                            "created": round(now - rng.randint(30, 900) * 86400, 3),
                            "lastContact": round(now - rng.randint(5, 600), 3),
                            "lastUpdate": round(now - rng.randint(5, 600), 3),
                            "tags": [],
                            "fields": {},
                        }
                    )
                    next_device += 1
    return World(organizations, locations, devices)


@dataclass
class ActivityStream:
    """Produces NinjaOne-shaped activities one at a time.

    A condition that triggered resets later with the same ``seriesUid``; a script
    run is requested, then completes with a result; patching scans and installs;
    devices get approved (SYSTEM, NODE_*_APPROVED).
    """

    world: World
    rng: random.Random
    # None: start from the clock, in microseconds (see the module's docstring).
    next_id: int | None = None
    clock: Callable[[], float] = time.time
    _pending: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.next_id is None:
            self.next_id = int(self.clock() * 1_000_000)

    def take_id(self) -> int:
        """The next activity id: larger than every earlier one, sparse."""
        assert self.next_id is not None
        self.next_id += self.rng.randint(1, 9)
        return self.next_id

    def system_event(
        self,
        status: str,
        message: str,
        *,
        device_id: int | None = None,
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """A SYSTEM activity reporting a change (``NODE_UPDATED``, ``CLIENT_UPDATED``…);
        about a device when ``device_id`` is given (organization and location events
        name no device, and the activity has no other id field)."""
        activity: dict[str, Any] = {
            "id": self.take_id(),
            "activityTime": round(self.clock(), 6),
            "activityType": "SYSTEM",
            "statusCode": status,
            "status": status.replace("_", " ").capitalize(),
            "type": "System",
            "message": message,
        }
        if device_id is not None:
            activity["deviceId"] = device_id
        if user_id is not None:
            activity["userId"] = user_id
        return activity

    def _base(self, device: dict[str, Any], activity_type: str, status: str) -> dict[str, Any]:
        return {
            "id": self.take_id(),
            "activityTime": round(self.clock(), 6),
            "deviceId": device["id"],
            "activityType": activity_type,
            "statusCode": status,
            "status": status.replace("_", " ").capitalize(),
            "type": activity_type.replace("_", " ").capitalize(),
        }

    def next(self) -> dict[str, Any]:
        """The next activity: a follow-up of an earlier one about half the time."""
        if self._pending and self.rng.random() < 0.5:
            follow_up = self._pending.pop(self.rng.randrange(len(self._pending)))
            return self._finish(follow_up)
        if not self.world.devices:
            raise RuntimeError("the emulated tenant has no devices left")
        kind = self.rng.choices(("condition", "script", "patch", "approval"), (5, 3, 2, 1))[0]
        device = self.rng.choice(self.world.devices)
        make: Callable[[dict[str, Any]], dict[str, Any]] = getattr(self, f"_{kind}")
        return make(device)

    def drop_device(self, device_id: int) -> None:
        """Forget the follow-ups of a device that was deleted."""
        self._pending = [p for p in self._pending if p["of"].get("deviceId") != device_id]

    def _condition(self, device: dict[str, Any]) -> dict[str, Any]:
        index = self.rng.randrange(len(_CONDITIONS))
        source, subject, message, severity, priority = _CONDITIONS[index]
        activity = self._base(device, "CONDITION", "TRIGGERED")
        value = self.rng.randint(3, 99)
        activity.update(
            seriesUid=_uid(self.rng),
            sourceConfigUid=str(uuid.UUID(int=index + 1, version=4)),
            sourceName=source,
            subject=subject,
            message=message.format(v=value),
            # NinjaOne sends params as strings in one delivery and numbers in another.
            data={
                "message": {
                    "code": "condition",
                    "params": {"value": value if value % 2 else str(value)},
                }
            },
        )
        if severity is not None:
            activity.update(severity=severity, priority=priority)
        self._pending.append({"kind": "reset", "of": activity})
        return activity

    def _script(self, device: dict[str, Any]) -> dict[str, Any]:
        name = self.rng.choice(_SCRIPTS)
        activity = self._base(device, "ACTION", "START_REQUESTED")
        activity.update(
            seriesUid=_uid(self.rng),
            sourceName=name,
            userId=self.rng.randint(1, 5),
            message=f"Run {name} requested",
            data={"message": {"code": "script_start_requested", "params": {"scriptName": name}}},
        )
        self._pending.append({"kind": "script_done", "of": activity})
        return activity

    def _patch(self, device: dict[str, Any]) -> dict[str, Any]:
        status = self.rng.choice(
            (
                "PATCH_MANAGEMENT_SCAN_COMPLETED",
                "PATCH_MANAGEMENT_INSTALLED",
                "PATCH_MANAGEMENT_INSTALL_FAILED",
            )
        )
        activity = self._base(device, "PATCH_MANAGEMENT", status)
        kb = f"KB50{self.rng.randint(10000, 99999)}"
        activity.update(
            message={
                "PATCH_MANAGEMENT_SCAN_COMPLETED": (
                    f"Patch scan found {self.rng.randint(0, 12)} patches"
                ),
                "PATCH_MANAGEMENT_INSTALLED": f"{kb} installed",
                "PATCH_MANAGEMENT_INSTALL_FAILED": f"{kb} failed to install (0x80070643)",
            }[status],
            data={"message": {"code": status.lower(), "params": {"kb": kb}}},
        )
        if status == "PATCH_MANAGEMENT_INSTALL_FAILED":
            activity["activityResult"] = "FAILURE"
        return activity

    def _approval(self, device: dict[str, Any]) -> dict[str, Any]:
        manual = self.world.organization(device["organizationId"])["nodeApprovalMode"] == "MANUAL"
        status = "NODE_MANUALLY_APPROVED" if manual else "NODE_AUTOMATICALLY_APPROVED"
        activity = self._base(device, "SYSTEM", status)
        activity["message"] = (
            f"{device['displayName']} was {'manually' if manual else 'automatically'} approved"
        )
        if manual:
            activity["userId"] = self.rng.randint(1, 5)
        return activity

    def _finish(self, follow_up: dict[str, Any]) -> dict[str, Any]:
        earlier = follow_up["of"]
        device = {"id": earlier["deviceId"]}
        if follow_up["kind"] == "reset":
            activity = self._base(device, "CONDITION", "RESET")
            for key in (
                "seriesUid",
                "sourceConfigUid",
                "sourceName",
                "subject",
                "severity",
                "priority",
            ):
                if key in earlier:
                    activity[key] = earlier[key]
            activity["message"] = f"{earlier['sourceName']}: back to normal"
            return activity
        result = "SUCCESS" if self.rng.random() < 0.8 else "FAILURE"
        activity = self._base(device, "ACTION", "COMPLETED")
        activity.update(
            seriesUid=earlier["seriesUid"],
            sourceName=earlier["sourceName"],
            userId=earlier["userId"],
            activityResult=result,
            message=f"{earlier['sourceName']} {'completed' if result == 'SUCCESS' else 'failed'}",
        )
        return activity
