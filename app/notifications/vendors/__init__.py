"""Incident and SIEM destinations: PagerDuty, Opsgenie, Splunk HEC and syslog.

Each kind has its own module that builds the vendor's request from the message's
context (the activity, its alert, device and organization) and maps the vendor's
answer to an :class:`~app.notifications.destinations.Outcome`. This package's
:func:`send` and :func:`preview` pick the module by the destination's kind; their
settings are parsed by :mod:`app.notifications.vendor_config`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx

from app import tracing
from app.notifications.destinations import Envelope, Outcome
from app.notifications.routes import Destination
from app.notifications.templates import Message
from app.notifications.vendors import opsgenie, pagerduty, splunk_hec, syslog

_MODULES = {
    "pagerduty": pagerduty,
    "opsgenie": opsgenie,
    "splunk_hec": splunk_hec,
    "syslog": syslog,
}


def send(
    destination: Destination,
    message: Message,
    envelope: Envelope,
    *,
    route: str,
    timeout: float,
    client: httpx.Client | None = None,
) -> Outcome:
    """One attempt at a vendor destination (its module's ``send``); never raises for a
    failed delivery. Traced like :func:`app.notifications.destinations.send`."""
    module = _MODULES[destination.kind]

    def attempt() -> Outcome:
        try:
            outcome: Outcome = module.send(
                destination, message, envelope, timeout=timeout, client=client
            )
        except Exception as exc:
            return Outcome(ok=False, error=f"{exc.__class__.__name__}: {exc}"[:500])
        return outcome

    if not tracing.active():
        return attempt()
    attributes: dict[str, Any] = {
        "ninjahook.route": route,
        "ninjahook.destination.kind": destination.kind,
        "ninjahook.delivery.id": envelope.delivery_id,
    }
    with contextlib.suppress(Exception):  # the send reports a bad URL, not this
        attributes["server.address"] = httpx.URL(destination.url or "").host
    with tracing.client_span(f"notify {destination.kind}", attributes) as span:
        outcome = attempt()
        tracing.record_outcome(span, outcome.ok, outcome.status_code, outcome.error)
    return outcome


def preview(destination: Destination, message: Message) -> Any:
    """What an attempt would send, secrets hidden (``routes test``)."""
    return _MODULES[destination.kind].preview(destination, message)
