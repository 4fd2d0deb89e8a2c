"""Destinations: what each kind sends, checked on real servers on loopback.

Slack: an incoming webhook takes ``text`` and/or ``blocks`` (Block Kit: a header's
plain_text up to 150 characters, a section's text up to 3000, a context block up to
10 elements). Teams: an incoming webhook (or Workflows) takes ``{"type": "message",
"attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
"content": <AdaptiveCard>}]}`` (Microsoft's "Send Adaptive Cards using an Incoming
Webhook").
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest

from app.notifications.destinations import (
    Envelope,
    parse_retry_after,
    send,
    slack_payload,
    teams_payload,
)
from app.notifications.matching import describe, template_context
from app.notifications.routes import Destination, Secret, parse_routes
from app.notifications.templates import Message, render
from tests.support import DestinationServer, condition_activity, free_port

SIGNING_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def message(event: str = "notify", refers_to: str | None = None) -> Message:
    payload = condition_activity(11, status="RESET" if event == "resolved" else "TRIGGERED")
    context = template_context(
        describe(None, payload),
        route="r",
        event=event,
        alert_key=payload["seriesUid"],
        delivery_id="d-1",
        refers_to=refers_to,
    )
    return render(context)


@pytest.fixture
def receiver() -> Iterator[DestinationServer]:
    server = DestinationServer().start()
    yield server
    server.stop()


def test_default_wording_names_the_condition_device_and_severity() -> None:
    notify = message()
    assert notify.title == "[MAJOR] Disk Free Space < 10% on SRV-042"
    assert notify.text == "C: has 8% free space (threshold 10%)"
    assert ("Organization", "Org 7") in notify.facts
    resolved = message("resolved", refers_to="orig-1")
    assert resolved.title == "[RESOLVED] Disk Free Space < 10% on SRV-042"
    assert "orig-1" in resolved.text


def test_generic_webhook_is_signed_the_standard_webhooks_way(
    receiver: DestinationServer,
) -> None:
    destination = Destination(
        name="d",
        kind="webhook",
        url=receiver.url,
        signing_secret=Secret(SIGNING_SECRET, "$SIGNING"),
        headers={"X-Team": "noc"},
    )
    outcome = send(
        destination, message(), Envelope("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"), route="r", timeout=5
    )
    assert outcome.ok and outcome.status_code == 200
    (request,) = receiver.requests
    headers, raw = request["headers"], request["body"]
    assert headers["webhook-id"] == headers["idempotency-key"] == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    assert headers["x-team"] == "noc" and headers["content-type"] == "application/json"
    timestamp = int(headers["webhook-timestamp"])
    assert abs(time.time() - timestamp) < 60
    key = base64.b64decode(SIGNING_SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{timestamp}.".encode() + raw
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    body = json.loads(raw)
    assert body["id"] == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W" and body["activity"]["id"] == 11


def test_an_unsigned_webhook_sends_no_signature(receiver: DestinationServer) -> None:
    destination = Destination(name="d", kind="webhook", url=receiver.url)
    assert send(destination, message(), Envelope("id-1"), route="r", timeout=5).ok
    assert "webhook-signature" not in receiver.requests[0]["headers"]


def test_slack_message_has_the_documented_shape(receiver: DestinationServer) -> None:
    destination = Destination(name="s", kind="slack", url_secret=Secret(receiver.url, "$SLACK_URL"))
    assert send(destination, message(), Envelope("id-2"), route="r", timeout=5).ok
    (payload,) = receiver.payloads()
    assert payload == slack_payload(message())
    assert isinstance(payload["text"], str) and "Disk Free Space" in payload["text"]
    header, section, context = payload["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert 0 < len(header["text"]["text"]) <= 150
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert 0 < len(section["text"]["text"]) <= 3000
    assert context["type"] == "context" and 0 < len(context["elements"]) <= 10
    assert all(e["type"] == "mrkdwn" and e["text"] for e in context["elements"])
    long = Message(title="t" * 400, text="x" * 5000, event="notify", facts=(), context={})
    blocks = slack_payload(long)["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150 and len(blocks[1]["text"]["text"]) == 3000


def test_teams_message_is_an_adaptive_card_attachment(receiver: DestinationServer) -> None:
    destination = Destination(name="t", kind="teams", url_secret=Secret(receiver.url, "$TEAMS_URL"))
    assert send(destination, message(), Envelope("id-3"), route="r", timeout=5).ok
    (payload,) = receiver.payloads()
    assert payload == teams_payload(message())
    assert payload["type"] == "message"
    (attachment,) = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["version"] in {"1.0", "1.1", "1.2", "1.3", "1.4", "1.5"}
    kinds = [element["type"] for element in card["body"]]
    assert kinds == ["TextBlock", "TextBlock", "FactSet"]
    assert card["body"][0]["text"].startswith("\\[MAJOR\\] Disk Free Space")
    assert all(set(f) == {"title", "value"} for f in card["body"][2]["facts"])


def test_failures_are_classified_and_never_reveal_the_url() -> None:
    secret_url = f"http://127.0.0.1:{free_port()}/services/T000/B000/XXXXSECRETXXXX"
    destination = Destination(name="s", kind="slack", url_secret=Secret(secret_url, "$S"))
    outcome = send(destination, message(), Envelope("id-4"), route="r", timeout=2)
    assert not outcome.ok and not outcome.permanent
    assert "SECRET" not in (outcome.error or "") and "ConnectError" in (outcome.error or "")

    gone = DestinationServer("error", status=404).start()
    try:
        dest = Destination(name="w", kind="webhook", url=gone.url)
        outcome = send(dest, message(), Envelope("id-5"), route="r", timeout=2)
        assert not outcome.ok and outcome.permanent and outcome.status_code == 404
    finally:
        gone.stop()


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120.0
    http_date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(http_date, now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("garbage", now) is None
    assert parse_retry_after(None, now) is None


def test_apprise_url_reaches_its_service(receiver: DestinationServer) -> None:
    url = receiver.url.replace("http://", "json://")
    config = parse_routes(
        "destinations:\n  pager: {kind: apprise, url_env: PAGER_URL}\n"
        "routes:\n  - {name: r, destinations: [pager]}\n",
        environ={"PAGER_URL": url},
    )
    outcome = send(config.destinations["pager"], message(), Envelope("id-6"), route="r", timeout=5)
    assert outcome.ok, outcome.error
    (payload,) = receiver.payloads()
    assert payload["title"].startswith("[MAJOR] Disk Free Space")
    assert payload["message"] == "C: has 8% free space (threshold 10%)"


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.event = threading.Event()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        self.event.set()
        return "250 OK"


def test_email_threads_the_resolved_follow_up_under_the_notification() -> None:
    from aiosmtpd.controller import Controller

    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        destination = Destination(
            name="mail",
            kind="email",
            smtp_host="127.0.0.1",
            smtp_port=controller.port,
            smtp_tls="none",
            mail_from="ninjahook@example.com",
            mail_to=("noc@example.com",),
        )
        assert send(destination, message(), Envelope("first-id"), route="r", timeout=5).ok
        follow_up = message("resolved", refers_to="first-id")
        assert send(
            destination, follow_up, Envelope("second-id", "first-id"), route="r", timeout=5
        ).ok
    finally:
        controller.stop()
    first, second = (message_from_bytes(m) for m in mailbox.messages)
    # Without NINJAHOOK_MAIL_DOMAIN the Message-IDs take the from address's domain.
    assert first["Message-ID"] == "<first-id@example.com>"
    assert first["Subject"] == "[MAJOR] Disk Free Space < 10% on SRV-042"
    assert second["In-Reply-To"] == "<first-id@example.com>" == second["References"]
    assert second["Subject"] == "[RESOLVED] Disk Free Space < 10% on SRV-042"
