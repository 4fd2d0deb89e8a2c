"""Honest tools: `routes check` warns for match values webhook.yaml's enums do not list
(and fails on them with --strict), `routes test` needs no secrets and says what would
really happen (once_per_alert, resolved, max_lateness), and the dashboard's delivery
table shows each outcome as what it is."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest

from tests.support import (
    API_TOKEN,
    FAST_DELIVERY,
    DestinationServer,
    condition_activity,
    deliver,
    minimal_activity,
    run_cli,
    settle_deliveries,
)

TYPO_ROUTES = """\
destinations:
  d: {kind: webhook, url: 'http://127.0.0.1:9/hook'}
routes:
  - name: servers
    match:
      activityType: [CONDITON]
      nodeClass: [WINDOWS_SERVR, LINUX_SERVER]
      statusCode: [TRIGGERED]
    destinations: [d]
"""


def test_routes_check_warns_for_values_no_enum_lists_and_strict_fails(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(TYPO_ROUTES)
    env = {"NINJAHOOK_INSTANCE_PATH": str(tmp_path / "instance")}
    result = run_cli(["routes", "check", "--file", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert (
        f"warning: {path}:6: routes[0] (servers).match.activityType: 'CONDITON' is not a value "
        "webhook.yaml knows (did you mean 'CONDITION'?)" in result.output
    )
    assert (
        f"{path}:7: routes[0] (servers).match.nodeClass: 'WINDOWS_SERVR' is not a value "
        "webhook.yaml knows (did you mean 'WINDOWS_SERVER'?)" in result.output
    )
    # Known values (LINUX_SERVER, TRIGGERED) are not warned about.
    assert result.output.count("warning:") == 2
    assert "OK (1 routes, 1 destinations, 2 warnings)" in result.output
    as_json = run_cli(["routes", "check", "--file", str(path), "--json"], env=env)
    assert as_json.exit_code == 0
    document = json.loads(as_json.stdout)
    assert [w.split(": ")[1] for w in document["warnings"]] == [
        "routes[0] (servers).match.activityType",
        "routes[0] (servers).match.nodeClass",
    ]
    strict = run_cli(["routes", "check", "--file", str(path), "--strict"], env=env)
    assert strict.exit_code == 1
    assert "2 warnings (--strict)" in strict.output
    path.write_text(TYPO_ROUTES.replace("CONDITON", "CONDITION").replace("SERVR", "SERVER"))
    clean = run_cli(["routes", "check", "--file", str(path), "--strict"], env=env)
    assert clean.exit_code == 0 and "warning" not in clean.output


SECRET_ROUTES = """\
destinations:
  chat: {kind: slack, url_env: TOOLS_SLACK_URL}
  mail:
    kind: email
    host: smtp.example.org
    from: alerts@example.org
    to: [noc@example.org]
    username: ninjahook
    password_env: TOOLS_SMTP_PASSWORD
routes:
  - name: pager
    match: {activityType: [CONDITION]}
    destinations: [chat, mail]
  - name: capped
    match: {activityType: [CONDITION]}
    max_lateness: 10m
    destinations: [mail]
"""


def test_routes_test_needs_no_secrets_and_tells_a_repeat_from_a_first_trigger(
    make_app: Any, settings: dict[str, Any], tmp_path: Path
) -> None:
    """The app ingests with a routes file whose secrets are set; `routes test` runs
    without them."""
    path = tmp_path / "routes.yaml"
    path.write_text(SECRET_ROUTES)
    secrets = {
        "TOOLS_SLACK_URL": "https://hooks.slack.com/services/T0/B0/S3CR3T",
        "TOOLS_SMTP_PASSWORD": "hunter2-hunter2",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in secrets.items():
            patch.setenv(name, value)
        app = make_app(routes_file=str(path))
    now = time.time()
    with app.test_client() as client:
        deliver(client, condition_activity(1, series_uid="s-1", activity_time=now - 5))
        deliver(client, condition_activity(2, series_uid="s-1", activity_time=now - 2))
    env = {
        "NINJAHOOK_DATABASE_URL": settings["database_url"],
        "NINJAHOOK_INSTANCE_PATH": settings["instance_path"],
        "NINJAHOOK_ROUTES": str(path),
        "COLUMNS": "200",
    }
    first = run_cli(["routes", "test", "1"], env=env)
    assert first.exit_code == 0, first.output
    assert "route pager: MATCH (notify)" in first.output
    assert "→ chat (slack)" in first.output and "→ mail (email)" in first.output
    assert "[MAJOR] Disk Free Space < 10% on SRV-042" in first.output
    # The deliveries the activity really got are listed.
    assert re.search(r"delivery [0-9a-f-]{36} → chat \(notify\): pending", first.output)
    assert not any(value in first.output for value in secrets.values())

    repeat = run_cli(["routes", "test", "2"], env=env)
    assert repeat.exit_code == 0, repeat.output
    assert (
        "route pager: MATCH, nothing sent: once_per_alert: the alert was notified already "
        "(activity 1)" in repeat.output
    )
    assert "MATCH (notify)" not in repeat.output

    # An activity that arrived 15 minutes late: capped's max_lateness keeps it quiet.
    with app.test_client() as client:
        deliver(client, condition_activity(3, series_uid="s-3", activity_time=now - 900))
    late = run_cli(["routes", "test", "3"], env=env)
    assert "route pager: MATCH (notify)" in late.output
    assert re.search(
        r"route capped: MATCH, nothing sent: late: the activity arrived 9\d\ds after it "
        r"happened \(max_lateness 600s\)",
        late.output,
    )

    # A secret the routes file names is still checked by `routes check` (start-up does too).
    check = run_cli(["routes", "check"], env=env)
    assert check.exit_code == 1 and "TOOLS_SLACK_URL is not set" in check.output


class _AnswersOkWith500(BaseHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(500)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def failing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AnswersOkWith500)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def _logged_in(client: Any) -> None:
    match = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text)
    assert match is not None
    r = client.post(
        "/login", data={"token": API_TOKEN, "csrf": match.group(1)}, follow_redirects=False
    )
    assert r.status_code == 303


def test_the_dashboard_delivery_table_shows_each_outcome_as_it_is(
    make_app: Any, tmp_path: Path, failing_server: str
) -> None:
    good = DestinationServer().start()
    try:
        routes = tmp_path / "routes.yaml"
        routes.write_text(
            "destinations:\n"
            f"  good: {{kind: webhook, url: '{good.url}'}}\n"
            f"  bad: {{kind: webhook, url: '{failing_server}'}}\n"
            "routes:\n"
            "  - {name: all, destinations: [good, bad]}\n"
            "  - {name: capped, destinations: [good], max_lateness: 1h}\n"
        )
        app = make_app(routes_file=str(routes), **FAST_DELIVERY)
        state = app.app.extensions["ninjahook"]
        with app.test_client() as client:
            deliver(client, minimal_activity(61))  # its activityTime is long past
            settle_deliveries(state)
            _logged_in(client)
            page = client.get("/ui/activities/61").text
    finally:
        good.stop()
    assert "<th>Outcome</th>" in page and "Last error" not in page
    rows = {
        (m.group("route"), m.group("destination")): m.group(0)
        for m in re.finditer(
            r'<tr class="delivery status-(?P<status>\w+)".*?<td>(?P<route>\w+)</td>\s*'
            r"<td>(?P<destination>\w+)</td>.*?</tr>",
            page,
            re.S,
        )
    }
    delivered = rows[("all", "good")]
    assert "status-delivered" in delivered
    assert '<td class="result">HTTP 200</td>' in delivered and 'class="error"' not in delivered
    dead = rows[("all", "bad")]
    assert "status-dead" in dead and '<td class="error">HTTP 500: ok</td>' in dead
    assert "HTTP 500: HTTP 500" not in page
    skipped = rows[("capped", "good")]
    assert "status-skipped" in skipped and 'class="error"' not in skipped
    assert re.search(r'<td class="result">not sent: late: the activity arrived \d+s', skipped)
