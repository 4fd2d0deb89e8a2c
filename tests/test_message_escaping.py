"""Activity text in outbound messages: escaped for Slack and Teams, one line in a subject.

Activities go in through the receiver, a delivery worker sends them to real servers on
loopback (a recording webhook server standing in for Slack and Teams, aiosmtpd for
e-mail), and the bodies they received are checked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from app.notifications.destinations import header_text
from app.notifications.templates import escape_slack, escape_teams
from tests.support import (
    FAST_DELIVERY,
    DestinationServer,
    condition_activity,
    deliver,
    free_port,
    settle_deliveries,
)

HOSTILE = (
    "<!channel> <https://evil.example|click here> *bold* _italic_ ~struck~ `code` "
    "[click](https://evil.example) <at>Everyone</at> & <@U123>"
)


class Mailbox:
    """An aiosmtpd handler keeping each message and its envelope recipients."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def chat() -> Iterator[DestinationServer]:
    server = DestinationServer().start()
    yield server
    server.stop()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    from aiosmtpd.controller import Controller

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


def routes_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return str(path)


def chat_routes(tmp_path: Path, url: str) -> str:
    (tmp_path / "slack-url").write_text(url + "?kind=slack")
    (tmp_path / "teams-url").write_text(url + "?kind=teams")
    return routes_file(
        tmp_path,
        "destinations:\n"
        f"  slack: {{kind: slack, url_file: '{tmp_path / 'slack-url'}'}}\n"
        f"  teams: {{kind: teams, url_file: '{tmp_path / 'teams-url'}'}}\n"
        "routes:\n"
        "  - name: plain\n"
        "    destinations: [slack, teams]\n"
        "  - name: styled\n"
        "    destinations: [slack, teams]\n"
        "    template: '*Alert:* {{ activity.message }} _on_ {{ device.name }}'\n",
    )


def received(chat: DestinationServer, kind: str, route: str) -> dict[str, Any]:
    import json

    with chat.lock:
        bodies = [json.loads(r["body"]) for r in chat.requests]
    # A route's two messages arrive at the same path; tell them apart by shape.
    for payload in bodies:
        is_slack = "blocks" in payload
        if is_slack != (kind == "slack"):
            continue
        text = (
            payload["blocks"][1]["text"]["text"]
            if is_slack
            else payload["attachments"][0]["content"]["body"][1]["text"]
        )
        if (route == "styled") == text.startswith("*Alert:*"):
            return payload
    raise AssertionError(f"no {kind} message for route {route}: {bodies}")


def test_slack_and_teams_messages_carry_activity_text_escaped(
    make_app: Any, tmp_path: Path, chat: DestinationServer
) -> None:
    app = make_app(routes_file=chat_routes(tmp_path, chat.url), **FAST_DELIVERY)
    state = app.app.extensions["ninjahook"]
    activity = condition_activity(1, message=HOSTILE, sourceName="<!channel> title *x*")
    activity["device"]["displayName"] = "*SRV*_<!here>"
    with app.test_client() as client:
        deliver(client, activity)
    settle_deliveries(state)
    assert len(chat.requests) == 4

    slack = received(chat, "slack", "plain")
    text = slack["blocks"][1]["text"]["text"]
    assert text == escape_slack(HOSTILE)
    for raw in ("<!channel>", "<https://", "<@U123>", "*bold*", "_italic_", "~struck~", "`code`"):
        assert raw not in text
    assert "&lt;!channel&gt;" in text and "&amp;" in text
    # The fallback text (mrkdwn too) escapes the title; the header is plain_text as sent.
    assert "<!channel>" not in slack["text"] and "&lt;!channel&gt; title" in slack["text"]
    assert slack["blocks"][0]["text"]["type"] == "plain_text"
    facts = [e["text"] for e in slack["blocks"][2]["elements"]]
    assert all("<!here>" not in f and "*SRV*" not in f for f in facts)
    assert any(f.startswith("*Device:* ") for f in facts)  # the fact names stay bold

    styled = received(chat, "slack", "styled")["blocks"][1]["text"]["text"]
    # The template's own markup stays markup; what it prints from the activity does not.
    assert styled.startswith("*Alert:* " + escape_slack(HOSTILE) + " _on_ ")
    assert "<!here>" not in styled and "&lt;!here&gt;" in styled

    teams = received(chat, "teams", "plain")
    card = teams["attachments"][0]["content"]["body"]
    assert card[1]["text"] == escape_teams(HOSTILE)
    for raw in ("[click](", "*bold*", "_italic_", "<at>", "`code`"):
        assert raw not in card[1]["text"]
    assert "\\[click\\](https://evil.example)" in card[1]["text"]
    assert "<!channel>" not in card[0]["text"] and "\\*x\\*" in card[0]["text"]
    assert all("<!here>" not in f["value"] for f in card[2]["facts"])

    teams_styled = received(chat, "teams", "styled")["attachments"][0]["content"]["body"]
    assert teams_styled[1]["text"].startswith("*Alert:* " + escape_teams(HOSTILE) + " _on_ ")


def test_escaping_leaves_plain_text_readable() -> None:
    assert escape_slack("C: has 8% free space (threshold 10%)") == (
        "C: has 8% free space (threshold 10%)"
    )
    assert escape_slack("a & b < c > d") == "a &amp; b &lt; c &gt; d"
    assert escape_teams("SRV-042 at 10.0.0.1 (disk C:)") == "SRV-042 at 10.0.0.1 (disk C:)"
    assert escape_teams("- item\n1. first\n# heading") == "\\- item\n1\\. first\n\\# heading"


BREAKS = ["\r\n", "\n", "\r", "\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x00"]


@pytest.mark.parametrize(
    "value", [f"x{b}y" for b in BREAKS], ids=[f"U+{ord(b[-1]):04X}" for b in BREAKS]
)
def test_header_text_folds_every_line_break_into_a_space(value: str) -> None:
    assert header_text(value) == "x y"


def test_email_subject_is_one_line_and_injects_no_header(
    make_app: Any, tmp_path: Path, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    routes = routes_file(
        tmp_path,
        "destinations:\n"
        f"  mail: {{kind: email, host: 127.0.0.1, port: {port}, tls: none,"
        " from: ninjahook@example.com, to: [noc@example.com]}\n"
        "routes:\n"
        "  - name: all\n"
        "    destinations: [mail]\n"
        "    title: '{{ activity.sourceName }}'\n",
    )
    app = make_app(routes_file=routes, **FAST_DELIVERY)
    state = app.app.extensions["ninjahook"]
    titles = {
        1: "x\r\nBcc: victim@example.com",
        2: "line one\nline two",
        3: "para\u2028graph",
        4: "next\u0085line",
        5: "cr\ronly\u2029and\x0bmore",
    }
    with app.test_client() as client:
        for activity_id, title in titles.items():
            deliver(client, condition_activity(activity_id, sourceName=title))
    settle_deliveries(state)

    from app.notifications import reads

    for activity_id in titles:
        (row,) = reads.activity_notifications(state, activity_id) or []
        assert row["status"] == "delivered", row
    assert len(box.messages) == len(titles)
    subjects = set()
    for recipients, content in box.messages:
        assert recipients == ["noc@example.com"]
        mail = message_from_bytes(content)
        assert mail["Bcc"] is None
        assert mail.get_all("To") == ["noc@example.com"]
        subject = str(mail["Subject"])
        assert not any(c in subject for c in "\r\n\u2028\u2029\u0085\x0b")
        subjects.add(subject)
    assert subjects == {
        "x Bcc: victim@example.com",
        "line one line two",
        "para graph",
        "next line",
        "cr only and more",
    }
