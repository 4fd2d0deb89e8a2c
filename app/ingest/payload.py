"""Reading an activity's payload: the one place that knows its shape.

Validation (webhook.yaml) has already checked the types of the fields it declares;
what is read here is what the schema leaves open: expanded objects that may be
absent or null, and ids that may come from the top level, the expanded device or its
``references``. The generated types (:mod:`app.spec.generated`) describe the shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard, cast

from app.spec.generated import Activity


def as_int(value: Any) -> int | None:
    """``value`` when it is an integer (a JSON boolean is not), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_str(value: Any) -> str | None:
    """``value`` when it is a string, else None."""
    return value if isinstance(value, str) else None


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is an object, else an empty one."""
    return value if isinstance(value, dict) else {}


def has_id(value: Any) -> TypeGuard[dict[str, Any]]:
    """Whether ``value`` is an object with an integer ``id``."""
    return isinstance(value, dict) and as_int(value.get("id")) is not None


def first_int(*values: Any) -> int | None:
    """The first of ``values`` that is an integer."""
    for value in values:
        number = as_int(value)
        if number is not None:
            return number
    return None


def dig(payload: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` (keys), or None where an object is missing on the way."""
    node: Any = payload
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


@dataclass(frozen=True)
class Subjects:
    """What an activity is about, read from the payload alone.

    Organization and location come from the expanded device (its ``organizationId``
    and ``locationId``, then its ``references``), and from the top-level expanded
    ``organization`` and ``location`` otherwise.
    """

    device: dict[str, Any]
    organization: dict[str, Any]
    location: dict[str, Any]
    ref_organization: dict[str, Any]
    ref_location: dict[str, Any]
    device_id: int | None
    organization_id: int | None
    location_id: int | None

    @classmethod
    def of(cls, payload: dict[str, Any]) -> Subjects:
        """The subjects of ``payload``."""
        activity = cast(Activity, payload)
        device = as_dict(activity.get("device"))
        refs = as_dict(device.get("references"))
        ref_org, ref_loc = as_dict(refs.get("organization")), as_dict(refs.get("location"))
        organization = as_dict(activity.get("organization"))
        location = as_dict(activity.get("location"))
        return cls(
            device=device,
            organization=organization,
            location=location,
            ref_organization=ref_org,
            ref_location=ref_loc,
            device_id=first_int(activity.get("deviceId"), device.get("id")),
            organization_id=first_int(
                device.get("organizationId"), ref_org.get("id"), organization.get("id")
            ),
            location_id=first_int(device.get("locationId"), ref_loc.get("id"), location.get("id")),
        )
