"""Opsgenie Alert API: one alert per NinjaOne alert, its ``alias`` the alert key.

A TRIGGERED creates the alert (``POST /v2/alerts``), the alert's RESET closes it and
an ACKNOWLEDGED acknowledges it (``POST /v2/alerts/{alias}/close|acknowledge`` with
``identifierType=alias``). Opsgenie answers 202 to each and processes it
asynchronously; a 429 (rate limit) or 5xx is retried, any other 4xx is permanent.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

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
    flat_details,
    incident_key,
    options,
    organization_name,
    post,
)

# NinjaOne's severity → Opsgenie's priority (README, "PagerDuty and Opsgenie").
PRIORITY = {"CRITICAL": "P1", "MAJOR": "P2", "MODERATE": "P3", "MINOR": "P4", "NONE": "P5"}


def requests(message: Message, tags: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """The (path, body) pairs one message sends, in order: one, or for a summary (an
    alert over before it could be notified) its create then its close."""
    ctx = message.context
    act = action(ctx)
    alias = incident_key(ctx)[:512]
    if ctx.get("summary") and act == RESOLVE:
        trigger_ctx = {**ctx, "activity": ctx.get("trigger") or ctx.get("activity")}
        return [_create(message, trigger_ctx, alias, tags), _follow_up(ctx, "close", alias)]
    if act == TRIGGER:
        return [_create(message, ctx, alias, tags)]
    return [_follow_up(ctx, "close" if act == RESOLVE else "acknowledge", alias)]


def _follow_up(ctx: dict[str, Any], verb: str, alias: str) -> tuple[str, dict[str, Any]]:
    activity = ctx.get("activity") or {}
    note = str(activity.get("message") or activity.get("statusCode") or "")
    body: dict[str, Any] = {"source": "ninjahook"}
    if note:
        body["note"] = note[:25000]
    return f"/v2/alerts/{quote(alias, safe='')}/{verb}?identifierType=alias", body


def _create(
    message: Message, ctx: dict[str, Any], alias: str, tags: tuple[str, ...]
) -> tuple[str, dict[str, Any]]:
    activity = ctx.get("activity") or {}
    links = ctx.get("links") or {}
    lines = [message.text] + [f"{label}: {url}" for label, url in message.links]
    body: dict[str, Any] = {
        "message": (message.title or str(activity.get("message") or "NinjaOne activity"))[:130],
        "alias": alias,
        "description": "\n\n".join(line for line in lines if line)[:15000],
        "priority": PRIORITY.get(str(activity.get("severity")), "P5"),
        "source": "ninjahook",
        "details": flat_details(
            {
                "activityId": activity.get("id"),
                "activityType": activity.get("activityType"),
                "statusCode": activity.get("statusCode"),
                "activityTime": activity_iso(activity),
                "condition": activity.get("sourceName"),
                "device": device_name(ctx),
                "organization": organization_name(ctx),
                "dashboard": links.get("alert"),
                "ninjaone": links.get("device"),
            }
        ),
    }
    entity = device_name(ctx)
    if entity:
        body["entity"] = entity[:512]
    if tags:
        body["tags"] = list(tags)
    return "/v2/alerts", body


def send(
    destination: Destination,
    message: Message,
    envelope: Envelope,
    *,
    timeout: float,
    client: httpx.Client | None,
) -> Outcome:
    """Send the message's requests in order; the first that fails is the outcome (a
    retry sends them all again: a create with an open alert's alias adds no alert)."""
    key = credential(destination)
    opts = options(destination)
    outcome = Outcome(ok=True)
    for path, body in requests(message, opts.tags):
        outcome = post(
            opts.url.rstrip("/") + path,
            json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
            {"Content-Type": "application/json", "Authorization": f"GenieKey {key}"},
            timeout=destination.timeout or timeout,
            client=client,
            secrets=[key],
        )
        if not outcome.ok:
            return outcome
    return outcome


def preview(destination: Destination, message: Message) -> list[dict[str, Any]]:
    opts = options(destination)
    return [
        {"POST": opts.url.rstrip("/") + path, "body": body}
        for path, body in requests(message, opts.tags)
    ]
