"""Syslog (RFC 5424) over UDP, TCP or TLS: one line per activity, for a SIEM mirror.

``<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [SD-ID id="…" activityType="…"
statusCode="…" device="…" organization="…"] MSG``: the timestamp is the activityTime,
HOSTNAME the device, MSGID the activityType, PRI the facility with the severity
mapped from NinjaOne's. On TCP and TLS each message is framed by octet counting
(RFC 6587, ``LEN SP MSG``); on UDP it is one datagram. A refused or broken
connection is retried; UDP cannot tell a lost datagram.
"""

from __future__ import annotations

import re
import socket
import ssl
from datetime import UTC, datetime
from typing import Any

import httpx

from app.notifications.destinations import Envelope, Outcome
from app.notifications.routes import Destination
from app.notifications.templates import Message
from app.notifications.vendor_config import syslog_address
from app.notifications.vendors.base import activity_time, device_name, options, organization_name
from app.notifications.vendors.ordered import activity_order, send_in_order

# NinjaOne's severity → syslog's (README, "Splunk HEC and syslog").
SEVERITY = {"CRITICAL": 2, "MAJOR": 3, "MODERATE": 4, "MINOR": 5, "NONE": 6}
INFORMATIONAL = 6
# Most lines one connection carries.
BATCH_SIZE = 100
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")


def header_field(value: Any, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, at most ``limit``
    characters, ``-`` when empty."""
    text = _NOT_PRINTUSASCII.sub("_", str(value or ""))[:limit]
    return text or "-"


def param_value(value: Any) -> str:
    """An SD-PARAM value, with ``"``, ``\\`` and ``]`` escaped as RFC 5424 asks."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def line(destination: Destination, message: Message) -> str:
    """The RFC 5424 message of one activity (without framing)."""
    opts = options(destination)
    ctx = message.context
    activity = ctx.get("activity") or {}
    severity = SEVERITY.get(str(activity.get("severity")), INFORMATIONAL)
    when = activity_time(activity)
    stamp = (
        datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if when is not None
        else "-"
    )
    params = {
        "id": activity.get("id"),
        "activityType": activity.get("activityType"),
        "statusCode": activity.get("statusCode"),
        "device": device_name(ctx),
        "organization": organization_name(ctx),
    }
    alert = ctx.get("alert") or {}
    if alert.get("key"):
        params["alertKey"] = alert["key"]
    sd = " ".join(f'{k}="{param_value(v)}"' for k, v in params.items() if v is not None)
    text = str(activity.get("message") or message.title or "")
    msg = " ".join(text.split())  # one line per activity
    return (
        f"<{opts.facility * 8 + severity}>1 {stamp} {header_field(device_name(ctx), 255)} "
        f"{header_field(opts.app_name, 48)} - {header_field(activity.get('activityType'), 32)} "
        f"[{opts.sd_id} {sd}]" + (f" {msg}" if msg else "")
    )


def frame(message: bytes) -> bytes:
    """RFC 6587 octet counting."""
    return str(len(message)).encode() + b" " + message


def send(
    destination: Destination,
    message: Message,
    envelope: Envelope,
    *,
    timeout: float,
    client: httpx.Client | None,
) -> Outcome:
    """Send the activity's line; lines to the same receiver that are sent at the same
    time share one connection, in activity order (app.notifications.vendors.ordered)."""
    del envelope, client
    opts = options(destination)
    limit = destination.timeout or timeout
    activity = message.context.get("activity") or {}

    def write(lines: list[bytes]) -> Outcome:
        return _write(opts.url, opts.ca_file, lines, limit)

    return send_in_order(
        ("syslog", destination.name, opts.url),
        line(destination, message).encode(),
        activity_order(activity),
        write,
        batch_size=BATCH_SIZE,
        timeout=limit,
    )


def _write(url: str, ca_file: str | None, lines: list[bytes], timeout: float) -> Outcome:
    try:
        transport, host, port = syslog_address(url)
        if transport == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for data in lines:
                    udp.sendto(data, (host, port))
            return Outcome(ok=True)
        framed = b"".join(frame(data) for data in lines)
        with socket.create_connection((host, port), timeout=timeout) as raw:
            if transport == "tls":
                context = ssl.create_default_context(cafile=ca_file)
                with context.wrap_socket(raw, server_hostname=host) as tls:
                    tls.sendall(framed)
            else:
                raw.sendall(framed)
        return Outcome(ok=True)
    except (OSError, ValueError) as exc:
        return Outcome(ok=False, error=f"{exc.__class__.__name__}: {exc}"[:500])


def preview(destination: Destination, message: Message) -> dict[str, Any]:
    return {"to": options(destination).url, "line": line(destination, message)}
