"""PagerDuty Events API v2: one incident per alert, keyed by the alert key.

A TRIGGERED sends ``trigger`` (``dedup_key`` = the alert key), the alert's RESET
``resolve`` and an ACKNOWLEDGED ``acknowledge`` with the same ``dedup_key``. PagerDuty
answers 202 to an accepted event, 400 to an invalid one (never retried), and 429 when
the routing key is throttled (retried later, after Retry-After when given); a 5xx is
retried too, as PagerDuty advises.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from app.notifications.destinations import Envelope, Outcome
from app.notifications.routes import Destination
from app.notifications.templates import Message
from app.notifications.vendors.base import (
    RESOLVE,
    TRIGGER,
    action,
    activity_iso,
    credential,
    device_name,
    incident_key,
    options,
    organization_name,
    post,
)

# NinjaOne's severity → PagerDuty's (README, "PagerDuty and Opsgenie").
SEVERITY = {
    "CRITICAL": "critical",
    "MAJOR": "error",
    "MODERATE": "warning",
    "MINOR": "info",
    "NONE": "info",
}


def events(message: Message, routing_key: str) -> list[dict[str, Any]]:
    """The Events API bodies one message sends, in order: one event, or for a summary
    (an alert over before it could be notified) its trigger then its resolve."""
    ctx = message.context
    act = action(ctx)
    dedup_key = incident_key(ctx)[:255]
    if ctx.get("summary") and act == RESOLVE:
        trigger_ctx = {**ctx, "activity": ctx.get("trigger") or ctx.get("activity")}
        return [
            _trigger(message, trigger_ctx, routing_key, dedup_key),
            _follow_up(routing_key, RESOLVE, dedup_key),
        ]
    if act == TRIGGER:
        return [_trigger(message, ctx, routing_key, dedup_key)]
    return [_follow_up(routing_key, act, dedup_key)]


def _follow_up(routing_key: str, act: str, dedup_key: str) -> dict[str, Any]:
    return {"routing_key": routing_key, "event_action": act, "dedup_key": dedup_key}


def _trigger(
    message: Message, ctx: dict[str, Any], routing_key: str, dedup_key: str
) -> dict[str, Any]:
    activity = ctx.get("activity") or {}
    links = ctx.get("links") or {}
    payload: dict[str, Any] = {
        "summary": (message.title or str(activity.get("message") or "NinjaOne activity"))[:1024],
        "source": device_name(ctx) or organization_name(ctx) or "NinjaOne",
        "severity": SEVERITY.get(str(activity.get("severity")), "info"),
        "custom_details": {
            "text": message.text,
            "activity": activity,
            "device": ctx.get("device"),
            "organization": ctx.get("organization"),
            "location": ctx.get("location"),
        },
    }
    timestamp = activity_iso(activity)
    if timestamp is not None:
        payload["timestamp"] = timestamp
    for key, value in (
        ("component", activity.get("sourceName")),
        ("group", organization_name(ctx)),
        ("class", activity.get("activityType")),
    ):
        if value:
            payload[key] = str(value)
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": TRIGGER,
        "dedup_key": dedup_key,
        "payload": payload,
        "client": "ninjahook",
    }
    hrefs = [
        {"href": href, "text": text}
        for href, text in (
            (links.get("alert"), "Alert in ninjahook"),
            (links.get("device"), "Device in NinjaOne"),
        )
        if href
    ]
    if hrefs:
        body["links"] = hrefs
    if links.get("alert"):
        body["client_url"] = links["alert"]
    return body


def send(
    destination: Destination,
    message: Message,
    envelope: Envelope,
    *,
    timeout: float,
    client: httpx.Client | None,
) -> Outcome:
    """Send the message's events in order; the first that fails is the outcome (a retry
    sends them all again: PagerDuty folds a repeated event into the same incident)."""
    key = credential(destination)
    outcome = Outcome(ok=True)
    for body in events(message, key):
        outcome = post(
            options(destination).url,
            json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
            {"Content-Type": "application/json", "Idempotency-Key": envelope.delivery_id},
            timeout=destination.timeout or timeout,
            client=client,
            secrets=[key],
        )
        if not outcome.ok:
            return outcome
    return outcome


def preview(destination: Destination, message: Message) -> dict[str, Any]:
    return {
        "POST": options(destination).url,
        "events": events(message, "<routing key>"),
    }
