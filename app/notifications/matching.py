"""Which routes an activity matches, and what its templates see."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from app.ingest.payload import Subjects
from app.notifications.routes import SEVERITIES, Match, Route, RoutesConfig
from app.storage import notifications as store
from app.timeparse import is_time, iso


@dataclass(frozen=True)
class Subject:
    """An activity with the device, organization and location it concerns.

    Names come from the delivery's expanded objects first and the entity cache
    otherwise (UI notification channels send no expansion).
    """

    activity: dict[str, Any]
    device: dict[str, Any] = field(default_factory=dict)
    organization: dict[str, Any] = field(default_factory=dict)
    location: dict[str, Any] = field(default_factory=dict)


def describe(conn: Connection | None, payload: dict[str, Any]) -> Subject:
    """The :class:`Subject` of ``payload``; ``conn`` (optional) reaches the entity cache."""
    subjects = Subjects.of(payload)
    expanded, ref_org, ref_loc = subjects.device, subjects.ref_organization, subjects.ref_location
    top_org, top_loc = subjects.organization, subjects.location
    device_id, org_id, loc_id = subjects.device_id, subjects.organization_id, subjects.location_id
    device = {
        "id": device_id,
        "displayName": expanded.get("displayName"),
        "systemName": expanded.get("systemName"),
        "nodeClass": expanded.get("nodeClass"),
        "organizationId": org_id,
        "locationId": loc_id,
    }
    organization = {"id": org_id, "name": ref_org.get("name") or top_org.get("name")}
    location = {"id": loc_id, "name": ref_loc.get("name") or top_loc.get("name")}
    if (
        conn is not None
        and device_id is not None
        and not (device["displayName"] and device["nodeClass"] and organization["name"])
    ):
        cached = store.cached_entities(conn, device_id)
        for key in ("displayName", "systemName", "nodeClass", "organizationId", "locationId"):
            device[key] = device[key] or cached.get(f"device.{key}")
        organization["id"] = organization["id"] or cached.get("device.organizationId")
        organization["name"] = organization["name"] or cached.get("organization.name")
        location["id"] = location["id"] or cached.get("device.locationId")
        location["name"] = location["name"] or cached.get("location.name")
    device["name"] = device["displayName"] or device["systemName"]
    return Subject(activity=payload, device=device, organization=organization, location=location)


def _in(wanted: tuple[int | str, ...], entity_id: Any, *names: Any) -> bool:
    folded = {n.casefold() for n in names if isinstance(n, str)}
    return any(
        (isinstance(w, int) and w == entity_id) or (isinstance(w, str) and w in folded)
        for w in wanted
    )


def severity_rank(severity: Any) -> int | None:
    """The position of ``severity`` in NONE < MINOR < MODERATE < MAJOR < CRITICAL."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else None


def matches(match: Match, subject: Subject) -> bool:
    """True when ``subject`` meets every condition of ``match``.

    An activity without a severity (real deliveries often omit it) does not meet
    a ``minSeverity`` above NONE.
    """
    activity = subject.activity
    if (
        match.activity_types is not None
        and activity.get("activityType") not in match.activity_types
    ):
        return False
    if match.status_codes is not None and activity.get("statusCode") not in match.status_codes:
        return False
    if match.min_severity is not None and match.min_severity != "NONE":
        rank = severity_rank(activity.get("severity"))
        if rank is None or rank < SEVERITIES.index(match.min_severity):
            return False
    if match.organizations and not _in(
        match.organizations, subject.organization.get("id"), subject.organization.get("name")
    ):
        return False
    if match.devices and not _in(
        match.devices,
        subject.device.get("id"),
        subject.device.get("displayName"),
        subject.device.get("systemName"),
    ):
        return False
    if match.node_classes is not None and subject.device.get("nodeClass") not in match.node_classes:
        return False
    if match.source_name is not None and not match.source_name.search(
        str(activity.get("sourceName") or "")
    ):
        return False
    return match.message is None or bool(match.message.search(str(activity.get("message") or "")))


def matching_routes(routes: RoutesConfig, subject: Subject) -> list[Route]:
    """The routes ``subject`` matches, in file order."""
    return [r for r in routes.routes if matches(r.match, subject)]


def template_context(
    subject: Subject,
    *,
    route: str,
    event: str,
    alert_key: str | None,
    delivery_id: str | None,
    refers_to: str | None,
    links: dict[str, str | None] | None = None,
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a template sees: ``activity`` (the payload as received), ``device``,
    ``organization``, ``location``, ``alert`` (None outside conditions), ``event``
    (``notify`` or ``resolved``), ``route``, ``delivery`` (``id``, ``refersTo``),
    ``links`` (``alert``: the dashboard, ``device``: NinjaOne; None when unknown) and
    ``summary``.

    With ``trigger`` (the TRIGGERED activity of an alert that was over before it could
    be notified), a ``resolved`` message is a ``summary``: ``trigger`` is in scope and
    ``alert`` gains ``triggeredAt`` and ``resolvedAt``."""
    alert: dict[str, Any] | None = None
    if alert_key is not None:
        alert = {"key": alert_key, "state": "resolved" if event == "resolved" else "open"}
        if trigger is not None:
            alert["triggeredAt"] = _time(trigger.get("activityTime"))
            alert["resolvedAt"] = _time(subject.activity.get("activityTime"))
    return {
        "activity": subject.activity,
        "device": subject.device,
        "organization": subject.organization,
        "location": subject.location,
        "alert": alert,
        "event": event,
        "route": route,
        "delivery": {"id": delivery_id, "refersTo": refers_to},
        "links": dict(links or {"alert": None, "device": None}),
        "summary": trigger is not None,
        "trigger": trigger,
    }


def _time(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and is_time(value):
        return iso(float(value))
    return None
