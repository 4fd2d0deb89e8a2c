"""NinjaOne-shaped activities, their wire form, and the entities they name."""

from __future__ import annotations

import json
import uuid
from typing import Any


def condition_activity(
    activity_id: int,
    *,
    status: str = "TRIGGERED",
    series_uid: str | None = None,
    device_id: int = 42,
    organization_id: int = 7,
    location_id: int = 9,
    activity_time: float | None = None,
    severity: str | None = "MAJOR",
    expand: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """A CONDITION activity shaped like NinjaOne's deliveries (expanded device by default)."""
    payload: dict[str, Any] = {
        "id": activity_id,
        "activityTime": activity_time if activity_time is not None else 1764300000.123456789,
        "deviceId": device_id,
        "seriesUid": series_uid or str(uuid.UUID(int=activity_id)),
        "activityType": "CONDITION",
        "statusCode": status,
        "status": status.title(),
        "sourceConfigUid": "0c7ed5a2-4c28-4e9c-8b43-8d4d3b0f2f11",
        "sourceName": "Disk Free Space < 10%",
        "subject": "Disk space low",
        "message": "C: has 8% free space (threshold 10%)",
        "type": "Condition",
        "data": {"message": {"code": "condition_disk_free", "params": {"threshold": "10"}}},
    }
    if severity is not None:
        payload["severity"] = severity
        payload["priority"] = "HIGH"
    if expand:
        payload["device"] = {
            "id": device_id,
            "organizationId": organization_id,
            "locationId": location_id,
            "nodeClass": "WINDOWS_SERVER",
            "approvalStatus": "APPROVED",
            "offline": False,
            "displayName": f"SRV-{device_id:03d}",
            "systemName": f"SRV-{device_id:03d}",
            "lastContact": 1764299990.5,
            "references": {
                "organization": {"id": organization_id, "name": f"Org {organization_id}"},
                "location": {"id": location_id, "name": f"Site {location_id}"},
            },
        }
    payload.update(extra)
    return payload


def minimal_activity(activity_id: int, **extra: Any) -> dict[str, Any]:
    """A delivery as a UI notification channel sends it: no expansion, few fields."""
    payload: dict[str, Any] = {
        "id": activity_id,
        "activityTime": 1764300000.5,
        "deviceId": 17,
        "activityType": "SYSTEM",
        "statusCode": "NODE_AUTOMATICALLY_APPROVED",
        "status": "Node automatically approved",
        "type": "System",
        "message": "Device approved automatically",
        "data": {},
    }
    payload.update(extra)
    return payload


def body(payload: dict[str, Any]) -> bytes:
    """The payload as NinjaOne would send it."""
    return json.dumps(payload, separators=(",", ":")).encode()


def seed_entities(db: Any, *, organization_id: int, device_id: int, location_id: int) -> None:
    """Put one organization, location and device into the entity cache, named like
    :func:`condition_activity`'s expansion (``Org 7``, ``Site 9``, ``SRV-042``)."""
    from app.storage.tables import devices, locations, organizations

    with db.begin() as conn:
        for table, values in (
            (organizations, {"id": organization_id, "name": f"Org {organization_id}"}),
            (
                locations,
                {
                    "id": location_id,
                    "organization_id": organization_id,
                    "name": f"Site {location_id}",
                },
            ),
            (
                devices,
                {
                    "id": device_id,
                    "organization_id": organization_id,
                    "location_id": location_id,
                    "display_name": f"SRV-{device_id:03d}",
                },
            ),
        ):
            if conn.execute(table.select().where(table.c.id == values["id"])).first() is None:
                conn.execute(table.insert().values(**values, observed_at=0.0, updated_at=0.0))
