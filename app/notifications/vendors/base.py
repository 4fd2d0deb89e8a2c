"""What the vendor modules share: their options, the action an activity asks for, the
names a vendor shows, and the mapping of an HTTP answer to an Outcome."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpx

from app.alerts.service import ACKNOWLEDGED, RESET_CODES
from app.notifications.destinations import (
    USER_AGENT,
    Outcome,
    post_for_outcome,
    redact_secrets,
)
from app.notifications.vendor_config import VendorOptions
from app.timeparse import is_time, iso

if TYPE_CHECKING:
    from app.notifications.routes import Destination

TRIGGER, ACKNOWLEDGE, RESOLVE = "trigger", "acknowledge", "resolve"


def options(destination: Destination) -> VendorOptions:
    """The destination's vendor options (set for every vendor kind when loaded)."""
    vendor = destination.vendor
    assert vendor is not None  # routes.py builds every vendor kind with its options
    return vendor


def credential(destination: Destination) -> str:
    secret = options(destination).credential
    return secret.value if secret is not None else ""


def action(context: dict[str, Any]) -> str:
    """What the activity asks of an incident: ``trigger``, ``acknowledge`` or ``resolve``.

    The outbox's event decides for alert-aware routes (``resolved``, ``acknowledge``);
    on a route that forwards every activity, the activity's statusCode does."""
    event = context.get("event")
    if event == "resolved":
        return RESOLVE
    if event == "acknowledge":
        return ACKNOWLEDGE
    status = (context.get("activity") or {}).get("statusCode")
    if status in RESET_CODES:
        return RESOLVE
    if status == ACKNOWLEDGED:
        return ACKNOWLEDGE
    return TRIGGER


def incident_key(context: dict[str, Any]) -> str:
    """The alert key (one incident per alert); an activity without an alert is its own."""
    alert = context.get("alert") or {}
    if alert.get("key"):
        return str(alert["key"])
    return f"ninjahook-activity-{(context.get('activity') or {}).get('id')}"


def device_name(context: dict[str, Any]) -> str | None:
    device = context.get("device") or {}
    name = device.get("name") or device.get("displayName") or device.get("systemName")
    return str(name) if name else None


def organization_name(context: dict[str, Any]) -> str | None:
    name = (context.get("organization") or {}).get("name")
    return str(name) if name else None


def activity_time(activity: dict[str, Any]) -> float | None:
    raw = activity.get("activityTime")
    if isinstance(raw, int | float) and not isinstance(raw, bool) and is_time(raw):
        return float(raw)
    return None


def activity_iso(activity: dict[str, Any]) -> str | None:
    when = activity_time(activity)
    return iso(when) if when is not None else None


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    client: httpx.Client | None,
    secrets: Iterable[str | None],
) -> Outcome:
    """:func:`app.notifications.destinations.post_for_outcome` with this project's
    User-Agent and ``secrets`` kept out of error texts."""
    hidden = list(secrets)
    return post_for_outcome(
        url,
        body,
        {"User-Agent": USER_AGENT, **headers},
        timeout=timeout,
        client=client,
        redact=lambda text: redact_secrets(text, hidden),
    )


def flat_details(values: dict[str, Any]) -> dict[str, str]:
    """A string-to-string map (Opsgenie's ``details``), leaving out empty values."""
    return {k: str(v) for k, v in values.items() if v is not None and v != ""}
