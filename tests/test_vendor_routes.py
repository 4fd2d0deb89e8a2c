"""The vendor kinds in the routes file: `routes check` validates them and `routes test`
renders what each would send, with no secret read or shown."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from app.notifications.routes import RoutesError, parse_routes
from tests.support import ROOT, condition_activity, deliver, run_cli

ROUTES = """\
destinations:
  pd:
    kind: pagerduty
    routing_key_env: ROUTES_PD_KEY
  og:
    kind: opsgenie
    region: eu
    api_key_file: opsgenie.key
  hec:
    kind: splunk_hec
    url: https://splunk.example:8088
    token_env: ROUTES_HEC_TOKEN
    index: rmm
  siem:
    kind: syslog
    url: tcp://siem.example:514
routes:
  - name: on-call
    match:
      activityType: [CONDITION]
    destinations: [pd, og]
  - name: mirror
    once_per_alert: false
    destinations: [hec, siem]
"""

SECRETS = {"ROUTES_PD_KEY": "pd-secret-routing-key", "ROUTES_HEC_TOKEN": "hec-secret-token"}


def test_routes_test_renders_each_vendor_request_without_secrets(
    make_app: Any, settings: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES)
    (tmp_path / "opsgenie.key").write_text("og-secret-key\n")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRETS.items():
            patch.setenv(name, value)
        app = make_app(routes_file=str(path))
    series = "5b1e0d1c-0000-4000-8000-0000000000c3"
    with app.test_client() as client:
        deliver(client, condition_activity(1, series_uid=series, activity_time=time.time()))
    env = {
        "NINJAHOOK_DATABASE_URL": settings["database_url"],
        "NINJAHOOK_INSTANCE_PATH": settings["instance_path"],
        "NINJAHOOK_ROUTES": str(path),
        "COLUMNS": "200",
    }
    shown = run_cli(["routes", "test", "1"], env=env)
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert "→ pd (pagerduty)" in out and "→ og (opsgenie)" in out
    assert '"POST": "https://events.pagerduty.com/v2/enqueue"' in out
    assert '"event_action": "trigger"' in out and f'"dedup_key": "{series}"' in out
    assert '"POST": "https://api.eu.opsgenie.com/v2/alerts"' in out and '"priority": "P2"' in out
    assert '"POST": "https://splunk.example:8088/services/collector/event"' in out
    assert '"index": "rmm"' in out
    assert '"to": "tcp://siem.example:514"' in out
    assert '[ninjahook@32473 id=\\"1\\" activityType=\\"CONDITION\\"' in out
    assert not any(s in out for s in [*SECRETS.values(), "og-secret-key"])

    checked = run_cli(["routes", "check", "--json"], env={**env, **SECRETS})
    assert checked.exit_code == 0, checked.output
    targets = {
        d["name"]: (d["kind"], d["target"]) for d in json.loads(checked.output)["destinations"]
    }
    assert targets == {
        "pd": ("pagerduty", "https://events.pagerduty.com/v2/enqueue"),
        "og": ("opsgenie", "https://api.eu.opsgenie.com"),
        "hec": ("splunk_hec", "https://splunk.example:8088"),
        "siem": ("syslog", "tcp://siem.example:514"),
    }


@pytest.mark.parametrize(
    ("destination", "error"),
    [
        ("{kind: pagerduty}", "missing routing_key_env or routing_key_file"),
        ("{kind: pagerduty, routing_key: abc}", "routing_key: secrets are not written"),
        (
            "{kind: pagerduty, routing_key_env: K, url: 'ftp://x'}",
            "expected an http:// or https:// URL",
        ),
        ("{kind: pagerduty, routing_key_env: K, headers: {a: b}}", "unknown key 'headers'"),
        ("{kind: pagerduty, routing_key_env: MISSING}", "environment variable MISSING is not set"),
        ("{kind: splunk_hec, url: 'https://s', token: abc}", "token: secrets are not written"),
        ("{kind: syslog, url: 'tcp://s', facility: local9}", "unknown facility 'local9'"),
        (
            "{kind: syslog, url: 'tcp://s', sd_id: 'bad id'}",
            "sd_id: not valid in an RFC 5424 header",
        ),
        ("{kind: syslog, url: 'tcp://s', ca_file: ca.pem}", "ca_file: only for tls:// URLs"),
    ],
)
def test_vendor_destinations_are_validated_with_their_line(destination: str, error: str) -> None:
    text = f"destinations:\n  d: {destination}\nroutes:\n  - {{name: r, destinations: [d]}}\n"
    with pytest.raises(RoutesError, match=f"<routes>:2: destinations.d.*{error}"):
        parse_routes(text, environ={"K": "k"})


def test_a_grouping_route_cannot_send_to_a_per_alert_kind() -> None:
    """A grouped message stands for many alerts: it has no place in PagerDuty's one
    incident per alert, so the routes file says so instead of sending something odd."""
    text = (
        "destinations:\n"
        "  hook: {kind: webhook, url: 'http://127.0.0.1:9/'}\n"
        "  pd: {kind: pagerduty, routing_key_env: K}\n"
        "routes:\n"
        "  - name: r\n"
        "    group_by: [organization]\n"
        "    destinations: [hook, pd]\n"
    )
    with pytest.raises(
        RoutesError, match=r"<routes>:6: routes\[0\] \(r\)\.group_by: cannot group for pd"
    ):
        parse_routes(text, environ={"K": "k"})
    grouped_hook_only = text.replace("[hook, pd]", "[hook]")
    assert parse_routes(grouped_hook_only, environ={"K": "k"}).routes[0].group_by == (
        "organization",
    )


def test_the_readme_example_is_a_valid_routes_file(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### PagerDuty, Opsgenie, Splunk HEC and syslog") :]
    example = section[section.index("```yaml\n") + 8 : section.index("```\n", 8)]
    (tmp_path / "opsgenie").write_text("key\n")
    example = example.replace("/run/secrets/opsgenie", str(tmp_path / "opsgenie"))
    config = parse_routes(example, environ={"PD_ROUTING_KEY": "k", "SPLUNK_HEC_TOKEN": "t"})
    kinds = {d.kind for d in config.destinations.values()}
    assert kinds == {"pagerduty", "opsgenie", "splunk_hec", "syslog"}
    mirror = config.route("siem-mirror")
    assert mirror is not None and not mirror.once_per_alert


def test_vendor_credentials_are_redacted_from_library_logs(
    make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """httpx and httpcore log requests; a vendor's routing key or token never shows."""
    import logging

    key = "pd-routing-key-0123456789abcdef"
    monkeypatch.setenv("REDACT_PD_KEY", key)
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "destinations:\n  pd: {kind: pagerduty, routing_key_env: REDACT_PD_KEY}\n"
        "routes:\n  - {name: r, destinations: [pd]}\n"
    )
    from app.notifications.outbox import Worker

    state = make_app(routes_file=str(routes)).app.extensions["ninjahook"]
    Worker(state).close()  # a delivery worker registers the secrets it will send
    caplog.set_level("DEBUG")
    logging.getLogger("httpcore").debug("sent %s", {"routing_key": key})
    assert "sent" in caplog.text and key not in caplog.text and "<redacted>" in caplog.text
