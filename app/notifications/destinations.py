"""Sending one rendered message to one destination, and shaping it for each kind.

Every attempt carries the delivery's id (``webhook-id`` and ``Idempotency-Key``
headers, or the e-mail Message-ID) so a destination can drop a repeat. Generic
webhooks with a secret are signed the Standard Webhooks way:
``webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``,
where the key is the base64 part of a ``whsec_…`` secret, or the secret's UTF-8
bytes otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import hmac
import json
import smtplib
import ssl
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx

from app import tracing
from app.notifications.routes import Destination
from app.notifications.templates import Message, escape_slack, escape_teams

USER_AGENT = "ninjahook"
# Answers worth another attempt; any other 4xx means the request itself is wrong.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
MAX_RETRY_AFTER = 86400.0


@dataclass(frozen=True)
class Outcome:
    """How one attempt went."""

    ok: bool
    permanent: bool = False
    status_code: int | None = None
    retry_after: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Envelope:
    """The delivery an attempt belongs to."""

    delivery_id: str
    refers_to: str | None = None
    # The right-hand side of e-mail Message-IDs (NINJAHOOK_MAIL_DOMAIN); None: the
    # domain of the destination's from address.
    mail_domain: str | None = None


def slack_payload(message: Message) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` (the notification fallback) and ``blocks``.

    ``message.text`` was rendered for Slack (its activity text escaped as mrkdwn); the
    title is plain text, escaped here where Slack reads mrkdwn, and so are the facts.
    """
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": message.title[:150] or "ninjahook"},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": message.text[:3000] or " "}},
    ]
    if message.facts:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"*{name}:* {escape_slack(value)}"[:3000]}
                    for name, value in message.facts[:10]
                ],
            }
        )
    if message.links:
        # Slack's link syntax <url|label>: a URL's "&", "<" and ">" are escaped as Slack asks.
        links = " · ".join(
            f"<{_slack_url(url)}|{escape_slack(label)}>" for label, url in message.links
        )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": links[:3000]}})
    return {"text": f"{escape_slack(message.title)}\n{message.text}".strip(), "blocks": blocks}


def _slack_url(url: str) -> str:
    return url.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "%7C")


def teams_payload(message: Message) -> dict[str, Any]:
    """A Microsoft Teams incoming-webhook (or Workflows) body: one Adaptive Card attachment.

    ``message.text`` was rendered for Teams (its activity text escaped); the title and
    the facts are plain text, escaped here.
    """
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": escape_teams(message.title),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "style": "heading",
        },
        {"type": "TextBlock", "text": message.text, "wrap": True},
    ]
    if message.facts:
        body.append(
            {
                "type": "FactSet",
                "facts": [
                    {"title": name, "value": escape_teams(value)} for name, value in message.facts
                ],
            }
        )
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": body,
                    **(
                        {
                            "actions": [
                                {"type": "Action.OpenUrl", "title": label, "url": url}
                                for label, url in message.links
                            ]
                        }
                        if message.links
                        else {}
                    ),
                },
            }
        ],
    }


def webhook_payload(message: Message, envelope: Envelope, route: str) -> dict[str, Any]:
    """The generic webhook's JSON body: the rendered text plus everything it was made from."""
    ctx = message.context
    return {
        "id": envelope.delivery_id,
        "event": message.event,
        "route": route,
        "refersTo": envelope.refers_to,
        "title": message.title,
        "text": message.text,
        "summary": bool(ctx.get("summary")),
        "links": dict(ctx.get("links") or {}),
        "alert": ctx.get("alert"),
        "device": ctx.get("device"),
        "organization": ctx.get("organization"),
        "location": ctx.get("location"),
        "activity": ctx.get("activity"),
    }


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value for one request."""
    key = (
        base64.b64decode(secret.removeprefix("whsec_"))
        if secret.startswith("whsec_")
        else secret.encode()
    )
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def redact_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with each of ``secrets`` removed, cut to what an error column keeps."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text[:500]


def _redact(text: str, destination: Destination) -> str:
    """``text`` with the destination's URL and secrets removed (they may be credentials)."""
    return redact_secrets(
        text,
        (
            destination.target_url(),
            destination.signing_secret.value if destination.signing_secret else None,
            destination.smtp_password.value if destination.smtp_password else None,
        ),
    )


def post_for_outcome(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    client: httpx.Client | None,
    redact: Callable[[str], str],
) -> Outcome:
    """POST ``body``; a 2xx is delivered, 429/408/409/425 and 5xx are retried (after
    Retry-After when given), any other 4xx is permanent (the request itself is wrong).
    Error texts pass through ``redact``."""
    owned = client is None
    http = client or httpx.Client(follow_redirects=False)
    try:
        response = http.post(url, content=body, headers=dict(headers), timeout=timeout)
    except httpx.HTTPError as exc:
        return Outcome(ok=False, error=redact(f"{exc.__class__.__name__}: {exc}"))
    finally:
        if owned:
            http.close()
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(ok=True, status_code=code)
    retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
    snippet = response.text[:200].strip()
    error = redact(f"HTTP {code}" + (f": {snippet}" if snippet else ""))
    permanent = 300 <= code < 500 and code not in RETRYABLE_STATUS
    return Outcome(
        ok=False, permanent=permanent, status_code=code, retry_after=retry_after, error=error
    )


def send(
    destination: Destination,
    message: Message,
    envelope: Envelope,
    *,
    route: str,
    timeout: float,
    client: httpx.Client | None = None,
) -> Outcome:
    """Make one attempt; never raises for a failed delivery (the outcome says why).

    When tracing is on, the attempt is a client span (``notify <kind>``) naming the
    route, the destination kind, the delivery id and the host, never the URL (a Slack or
    Teams URL is a secret)."""
    if not tracing.active():
        return _send(destination, message, envelope, route=route, timeout=timeout, client=client)
    url = destination.target_url() if destination.kind not in ("email", "apprise") else None
    attributes: dict[str, Any] = {
        "ninjahook.route": route,
        "ninjahook.destination.kind": destination.kind,
        "ninjahook.delivery.id": envelope.delivery_id,
    }
    if url:
        attributes["http.request.method"] = "POST"
        with contextlib.suppress(Exception):  # the send reports a bad URL, not this
            attributes["server.address"] = httpx.URL(url).host
    with tracing.client_span(f"notify {destination.kind}", attributes) as span:
        outcome = _send(destination, message, envelope, route=route, timeout=timeout, client=client)
        tracing.record_outcome(span, outcome.ok, outcome.status_code, outcome.error)
    return outcome


def _send(
    destination: Destination,
    message: Message,
    envelope: Envelope,
    *,
    route: str,
    timeout: float,
    client: httpx.Client | None,
) -> Outcome:
    try:
        if destination.kind == "email":
            return _send_email(destination, message, envelope, timeout)
        if destination.kind == "apprise":
            return _send_apprise(destination, message)
        if destination.kind == "slack":
            payload = slack_payload(message)
        elif destination.kind == "teams":
            payload = teams_payload(message)
        else:
            payload = webhook_payload(message, envelope, route)
        return _post(destination, payload, envelope, timeout, client)
    except Exception as exc:
        return Outcome(ok=False, error=_redact(f"{exc.__class__.__name__}: {exc}", destination))


def _post(
    destination: Destination,
    payload: dict[str, Any],
    envelope: Envelope,
    timeout: float,
    client: httpx.Client | None,
) -> Outcome:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        **destination.headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": envelope.delivery_id,
        "webhook-id": envelope.delivery_id,
    }
    if destination.signing_secret is not None:
        timestamp = int(time.time())
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = sign(
            destination.signing_secret.value, envelope.delivery_id, timestamp, body
        )
    url = destination.target_url()
    assert url is not None  # validated when the routes file was loaded
    return post_for_outcome(
        url,
        body,
        headers,
        timeout=destination.timeout or timeout,
        client=client,
        redact=lambda text: _redact(text, destination),
    )


def header_text(text: str) -> str:
    """``text`` folded into one line for a mail header: control characters and every
    line break (CR, LF, U+0085, U+2028, U+2029, …) become spaces and runs of spaces
    one, so an activity's title can neither inject a header nor make the mail unsendable.
    """
    spaced = "".join(
        " " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in text
    )
    return " ".join(spaced.split())


def message_id_domain(destination: Destination, envelope: Envelope) -> str:
    """The domain of the Message-IDs sent to an e-mail destination: the configured one,
    else the from address's (a domain the sender speaks for, as RFC 5322 asks)."""
    if envelope.mail_domain:
        return envelope.mail_domain
    sender = email.utils.parseaddr(destination.mail_from or "")[1]
    return sender.rpartition("@")[2].lower() or "localhost"


def _message_id(delivery_id: str, domain: str) -> str:
    return f"<{delivery_id}@{domain}>"


def _send_email(
    destination: Destination, message: Message, envelope: Envelope, timeout: float
) -> Outcome:
    mail = EmailMessage()
    mail["Subject"] = header_text(message.title)
    mail["From"] = destination.mail_from
    mail["To"] = ", ".join(destination.mail_to)
    mail["Date"] = email.utils.format_datetime(datetime.now(UTC))
    # The delivery id as Message-ID lets a mail system drop a repeated attempt, and a
    # "resolved" follow-up threads under the original notification.
    domain = message_id_domain(destination, envelope)
    mail["Message-ID"] = _message_id(envelope.delivery_id, domain)
    if envelope.refers_to:
        mail["In-Reply-To"] = _message_id(envelope.refers_to, domain)
        mail["References"] = _message_id(envelope.refers_to, domain)
    lines = [message.text, ""] + [f"{name}: {value}" for name, value in message.facts]
    if message.links:
        lines += [""] + [f"{label}: {url}" for label, url in message.links]
    mail.set_content("\n".join(lines))
    host = destination.smtp_host or "localhost"
    limit = destination.timeout or timeout
    smtp: smtplib.SMTP
    if destination.smtp_tls == "ssl":
        smtp = smtplib.SMTP_SSL(
            host, destination.smtp_port, timeout=limit, context=ssl.create_default_context()
        )
    else:
        smtp = smtplib.SMTP(host, destination.smtp_port, timeout=limit)
    with smtp:
        if destination.smtp_tls == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if destination.smtp_username and destination.smtp_password:
            smtp.login(destination.smtp_username, destination.smtp_password.value)
        refused = smtp.send_message(mail)
    if refused:
        return Outcome(ok=False, permanent=True, error=f"recipients refused: {sorted(refused)}")
    return Outcome(ok=True)


def _send_apprise(destination: Destination, message: Message) -> Outcome:
    import apprise

    notifier = apprise.Apprise()
    url = destination.target_url()
    if not url or not notifier.add(url):
        return Outcome(ok=False, permanent=True, error="apprise does not recognise the URL")
    links = "\n".join(f"{label}: {url}" for label, url in message.links)
    body = "\n\n".join(part for part in (message.text, links) if part) or message.title
    if notifier.notify(body=body, title=message.title):
        return Outcome(ok=True)
    return Outcome(ok=False, error="apprise reported a failed notification")
