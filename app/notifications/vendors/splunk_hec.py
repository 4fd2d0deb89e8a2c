"""Splunk HTTP Event Collector: every activity as one HEC event, for a SIEM mirror.

Each event carries ``time`` (the activityTime), ``host`` (the device), ``source``,
``sourcetype``, ``index`` when set, and ``event``: the activity as NinjaOne delivered
it. Deliveries to the same collector that are sent at the same time go out together,
as one request of concatenated events (HEC's batch format, up to ``batch_size``), in
activity order (app.notifications.vendors.ordered). HEC answers 200
``{"text":"Success","code":0}``; 401/403 (token) and 400 (invalid data) are
permanent, 503 (busy) and 429 are retried.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.notifications.destinations import Envelope, Outcome
from app.notifications.routes import Destination
from app.notifications.templates import Message
from app.notifications.vendors.base import (
    activity_time,
    credential,
    device_name,
    options,
    post,
)
from app.notifications.vendors.ordered import activity_order, send_in_order

EVENT_PATH = "/services/collector/event"


def collector_url(url: str) -> str:
    """The event endpoint: ``url`` itself when it names a path, else HEC's default one."""
    return url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + EVENT_PATH


def hec_event(destination: Destination, message: Message) -> dict[str, Any]:
    """The HEC event of one message's activity."""
    opts = options(destination)
    ctx = message.context
    activity = ctx.get("activity") or {}
    event: dict[str, Any] = {}
    when = activity_time(activity)
    if when is not None:
        event["time"] = when
    host = device_name(ctx)
    if host:
        event["host"] = host
    event["source"] = opts.source or "ninjahook"
    event["sourcetype"] = opts.sourcetype
    if opts.index:
        event["index"] = opts.index
    event["event"] = activity
    return event


def batch_body(events: list[dict[str, Any]]) -> bytes:
    """HEC's batch format: the events' JSON objects one after another."""
    return b"\n".join(
        json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() for e in events
    )


def send(
    destination: Destination,
    message: Message,
    envelope: Envelope,
    *,
    timeout: float,
    client: httpx.Client | None,
) -> Outcome:
    del envelope  # HEC has no idempotency key; a retried batch may repeat an event
    opts = options(destination)
    token = credential(destination)
    url = collector_url(opts.url)

    def post_batch(events: list[dict[str, Any]]) -> Outcome:
        return post(
            url,
            batch_body(events),
            {"Content-Type": "application/json", "Authorization": f"Splunk {token}"},
            timeout=destination.timeout or timeout,
            client=client,
            secrets=[token],
        )

    activity = message.context.get("activity") or {}
    return send_in_order(
        ("splunk_hec", destination.name, url),
        hec_event(destination, message),
        activity_order(activity),
        post_batch,
        batch_size=opts.batch_size,
        timeout=destination.timeout or timeout,
    )


def preview(destination: Destination, message: Message) -> dict[str, Any]:
    return {
        "POST": collector_url(options(destination).url),
        "event": hec_event(destination, message),
    }
