"""Messages that thread and link: e-mail Message-IDs carry a configured domain, the subject
keeps one stem from the notification to its "resolved", and every message links to the
alert on the dashboard (NINJAHOOK_PUBLIC_URL) and to the device in NinjaOne. Real SMTP
(aiosmtpd), real webhook and Slack-shaped servers, the real ingest path and worker."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from app.alerts.service import alert_ref
from app.config import ConfigError, load_config
from app.ingest.service import ingest_activity
from app.notifications.links import ninjaone_base
from app.services import build_state
from tests.support import (
    FAST_DELIVERY,
    DestinationServer,
    body,
    condition_activity,
    free_port,
    settle_deliveries,
)

PUBLIC_URL = "https://ninjahook.example.net"
SERIES = "5b1e0d1c-0000-4000-8000-00000000e3a1"
ALERT_LINK = f"{PUBLIC_URL}/ui/alerts/{alert_ref(SERIES)}"
DEVICE_LINK = "https://eu.ninjarmm.com/#/deviceDashboard/42/overview"


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self.lock:
            message = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(message, EmailMessage)
            self.messages.append(message)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield mailbox, controller.port
    controller.stop()


@pytest.fixture
def make_state(
    settings: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    built: list[Any] = []

    def make(destinations: str, destination_names: str, **overrides: str) -> Any:
        path = tmp_path / f"routes-{len(built)}.yaml"
        path.write_text(
            "destinations:\n"
            + destinations
            + f"routes:\n  - {{name: pager, destinations: [{destination_names}]}}\n"
        )
        values = {k: v for k, v in settings.items() if k != "validate_responses"}
        config = load_config(
            {**values, **FAST_DELIVERY, "routes_file": str(path), **overrides}, environ={}
        )
        state = build_state(config, refresh_cache=False)
        built.append(state)
        return state

    yield make
    for state in built:
        state.db.dispose()


def open_and_resolve(state: Any) -> None:
    now = time.time()
    for activity_id, status, at in ((1, "TRIGGERED", now - 3), (2, "RESET", now - 1)):
        payload = condition_activity(
            activity_id, status=status, series_uid=SERIES, activity_time=at, severity="MODERATE"
        )
        ingest_activity(state, body(payload), payload)
        settle_deliveries(state)


def email_destination(port: int) -> str:
    return (
        f"  mail: {{kind: email, host: 127.0.0.1, port: {port}, tls: none,"
        " from: 'NOC <alerts@noc.example.org>', to: [oncall@example.org]}\n"
    )


def test_email_threads_by_id_and_by_subject_and_links_the_alert_and_device(
    make_state: Callable[..., Any], smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    state = make_state(
        email_destination(port),
        "mail",
        public_url=PUBLIC_URL + "/",
        mail_domain="mail.ninjahook.example.net",
        ninjaone_region="eu",
    )
    open_and_resolve(state)
    notify, resolved = mailbox.messages
    id_pattern = re.compile(r"^<[0-9a-f-]{36}@mail\.ninjahook\.example\.net>$")
    assert id_pattern.match(notify["Message-ID"]) and id_pattern.match(resolved["Message-ID"])
    assert resolved["In-Reply-To"] == notify["Message-ID"] == resolved["References"]
    # One stem; the state stands in front, in brackets.
    assert notify["Subject"] == "[MODERATE] Disk Free Space < 10% on SRV-042"
    assert resolved["Subject"] == "[RESOLVED] Disk Free Space < 10% on SRV-042"
    for mail in (notify, resolved):
        text = mail.get_content()
        assert f"Dashboard: {ALERT_LINK}" in text
        assert f"NinjaOne: {DEVICE_LINK}" in text


def test_message_id_domain_defaults_to_the_public_url_then_the_sender(
    make_state: Callable[..., Any], smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    open_and_resolve(make_state(email_destination(port), "mail", public_url=PUBLIC_URL))
    assert all(m["Message-ID"].endswith("@ninjahook.example.net>") for m in mailbox.messages)
    mailbox.messages.clear()
    # Without either setting: the from address's domain; without a public URL, no
    # dashboard link, and without NinjaOne settings, no device link.
    state = make_state(email_destination(port), "mail")
    with state.db.begin() as conn:
        conn.exec_driver_sql("DELETE FROM deliveries")
        conn.exec_driver_sql("DELETE FROM delivery_alerts")
        conn.exec_driver_sql("DELETE FROM activities")
    open_and_resolve(state)
    assert all(m["Message-ID"].endswith("@noc.example.org>") for m in mailbox.messages)
    assert all("Dashboard:" not in m.get_content() for m in mailbox.messages)
    assert all("NinjaOne:" not in m.get_content() for m in mailbox.messages)


def test_webhook_and_slack_messages_carry_the_links(
    make_state: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    webhook = DestinationServer().start()
    slack = DestinationServer().start()
    try:
        monkeypatch.setenv("THREADING_SLACK_URL", slack.url)
        state = make_state(
            f"  hook: {{kind: webhook, url: '{webhook.url}'}}\n"
            "  chat: {kind: slack, url_env: THREADING_SLACK_URL}\n",
            "hook, chat",
            public_url=PUBLIC_URL,
            ninjaone_base_url="https://eu.ninjarmm.com",
        )
        open_and_resolve(state)
        notify, resolved = webhook.payloads()
        assert notify["links"] == resolved["links"] == {"alert": ALERT_LINK, "device": DEVICE_LINK}
        assert [p["title"] for p in (notify, resolved)] == [
            "[MODERATE] Disk Free Space < 10% on SRV-042",
            "[RESOLVED] Disk Free Space < 10% on SRV-042",
        ]
        for message in slack.payloads():
            link_block = message["blocks"][-1]["text"]["text"]
            assert f"<{ALERT_LINK}|Dashboard>" in link_block
            assert f"<{DEVICE_LINK}|NinjaOne>" in link_block
    finally:
        webhook.stop()
        slack.stop()


def test_the_link_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="NINJAHOOK_PUBLIC_URL"):
        load_config(environ={"NINJAHOOK_PUBLIC_URL": "ninjahook.example.net"})
    with pytest.raises(ConfigError, match="NINJAHOOK_MAIL_DOMAIN"):
        load_config(environ={"NINJAHOOK_MAIL_DOMAIN": "not a domain"})
    assert load_config(environ={"NINJAHOOK_PUBLIC_URL": PUBLIC_URL + "/"}).public_url == PUBLIC_URL


def test_device_links_know_every_ninjaone_region() -> None:
    from app.ninjaone.client import REGIONS

    found = {
        region: ninjaone_base(load_config({"ninjaone_region": region}, environ={}))
        for region in REGIONS
    }
    assert found == REGIONS
    assert ninjaone_base(load_config({"ninjaone_region": "mars"}, environ={})) is None
