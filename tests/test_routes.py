"""The routes file: validation errors that name the line, matching, and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from app.cli.main import main as cli
from app.notifications.matching import Subject, describe, matches
from app.notifications.routes import RoutesError, load_routes, parse_routes
from tests.support import (
    INGEST_PATH,
    WEBHOOK_HEADERS,
    condition_activity,
    minimal_activity,
)

GOOD = """\
destinations:
  hook:
    kind: webhook
    url: http://127.0.0.1:9/hook
    secret_env: HOOK_SECRET
  chat:
    kind: slack
    url_env: SLACK_URL
routes:
  - name: servers
    match:
      activityType: [CONDITION]
      statusCode: "*"
      minSeverity: major
      organization: ["Org 7", 8]
      device: [SRV-042]
      nodeClass: [WINDOWS_SERVER]
      sourceName: "^disk"
      message: "free space"
    destinations: [hook, chat]
    title: "{{ device.name }} needs attention"
"""
ENV = {
    "HOOK_SECRET": "whsec_c2VjcmV0c2VjcmV0",
    "SLACK_URL": "https://hooks.slack.com/services/T/B/X",
}


def error_of(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(RoutesError) as caught:
        parse_routes(text, "routes.yaml", ENV if environ is None else environ)
    return str(caught.value)


def test_a_valid_file_loads_with_secrets_resolved_but_never_shown() -> None:
    config = parse_routes(GOOD, "routes.yaml", ENV)
    (route,) = config.routes
    assert route.destinations == ("hook", "chat") and route.once_per_alert and route.line == 10
    assert config.destinations["chat"].target_url() == ENV["SLACK_URL"]
    assert "hooks.slack.com" not in repr(config.destinations["chat"])
    assert route.match.min_severity == "MAJOR" and route.match.status_codes is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("minSeverity: major", "minSeverity: HUGE"),
            "routes.yaml:14: routes[0] (servers).match.minSeverity: unknown severity 'HUGE'",
        ),
        (
            ("destinations: [hook, chat]", "destinations: [hook, pager]"),
            "routes.yaml:20: routes[0] (servers).destinations: unknown destination 'pager'",
        ),
        (
            ('sourceName: "^disk"', 'sourceName: "(disk"'),
            "routes.yaml:18: routes[0] (servers).match.sourceName: not a valid regular expression",
        ),
        (
            ("    kind: slack", "    kind: pigeon"),
            "routes.yaml:7: destinations.chat.kind: unknown kind 'pigeon'",
        ),
        (
            ("    secret_env: HOOK_SECRET", "    secret: hunter2"),
            "routes.yaml:5: destinations.hook.secret: secrets are not written in the routes file",
        ),
        (
            ("    url_env: SLACK_URL", "    url: https://hooks.slack.com/x"),
            "routes.yaml:8: destinations.chat.url: a slack URL is a credential",
        ),
        (
            ("      nodeClass:", "      nodeClas:"),
            "routes.yaml:17: routes[0] (servers).match: unknown key 'nodeClas'",
        ),
        (
            ('title: "{{ device.name }} needs attention"', 'title: "{{ device.name "'),
            "routes.yaml:21: routes[0] (servers).title: template error",
        ),
        (("  - name: servers", "  - name: servers!"), "routes.yaml:10: routes[0].name: 'servers!'"),
        (
            ("url: http://127.0.0.1:9/hook", "url: ftp://example.com"),
            "routes.yaml:4: destinations.hook.url: expected an http:// or https:// URL",
        ),
    ],
)
def test_errors_name_the_line_and_the_cause(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    assert error_of(GOOD.replace(old, new)).startswith(expected)


def test_missing_secrets_and_broken_yaml_are_reported() -> None:
    assert error_of(GOOD, {"SLACK_URL": ENV["SLACK_URL"]}).startswith(
        "routes.yaml:5: destinations.hook.secret_env: environment variable HOOK_SECRET is not set"
    )
    assert error_of("routes: [\n  - {name: a\n").startswith("routes.yaml:2: not valid YAML")
    assert "missing 'destinations'" in error_of("routes: []\n")


def test_secret_files_are_read_relative_to_the_routes_file(tmp_path: Path) -> None:
    (tmp_path / "slack.url").write_text("https://hooks.slack.com/services/T/B/FILE\n")
    path = tmp_path / "routes.yaml"
    path.write_text(
        "destinations:\n  chat: {kind: slack, url_file: slack.url}\n"
        "routes:\n  - {name: all, destinations: [chat]}\n"
    )
    config = load_routes(path, environ={})
    assert config.destinations["chat"].target_url() == "https://hooks.slack.com/services/T/B/FILE"
    (tmp_path / "slack.url").unlink()
    with pytest.raises(
        RoutesError, match=r"routes.yaml:2: destinations.chat.url_file: cannot read"
    ):
        load_routes(path, environ={})


def subject(payload: dict[str, Any]) -> Subject:
    return describe(None, payload)


def test_matching_on_every_field() -> None:
    match = parse_routes(GOOD, "r", ENV).routes[0].match
    assert matches(match, subject(condition_activity(1)))
    assert not matches(match, subject(condition_activity(1, severity="MINOR")))
    # Real deliveries often omit severity: that does not meet a minimum.
    assert not matches(match, subject(condition_activity(1, severity=None)))
    assert matches(match, subject(condition_activity(1, severity="CRITICAL")))
    assert not matches(match, subject(condition_activity(1, organization_id=9)))  # "Org 9"
    assert matches(match, subject(condition_activity(1, organization_id=8)))  # by id
    assert not matches(match, subject(condition_activity(1, device_id=43)))  # SRV-043
    assert not matches(match, subject(condition_activity(1, sourceName="CPU > 90%")))
    assert not matches(match, subject(condition_activity(1, message="all good")))
    assert not matches(match, subject(minimal_activity(1)))


def test_names_come_from_the_entity_cache_when_the_delivery_has_none(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    from app.storage.tables import devices, organizations

    app = make_app()
    state = app.app.extensions["ninjahook"]
    with state.db.begin() as conn:
        conn.execute(
            sa.insert(organizations).values(id=7, name="Acme", observed_at=1.0, updated_at=1.0)
        )
        conn.execute(
            sa.insert(devices).values(
                id=17,
                organization_id=7,
                display_name="FS-01",
                node_class="WINDOWS_SERVER",
                observed_at=1.0,
                updated_at=1.0,
            )
        )
    config = parse_routes(
        "destinations:\n  d: {kind: webhook, url: 'http://127.0.0.1:9/'}\n"
        "routes:\n  - name: acme\n    match: {organization: acme, device: fs-01, "
        "nodeClass: WINDOWS_SERVER}\n    destinations: [d]\n",
        "r",
        {},
    )
    with state.db.connect() as conn:
        described = describe(conn, minimal_activity(1))
    assert described.organization == {"id": 7, "name": "Acme"}
    assert matches(config.routes[0].match, described)


def test_create_app_refuses_an_invalid_routes_file(
    make_app: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import ConfigError

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)

    path = tmp_path / "routes.yaml"
    path.write_text(GOOD.replace("minSeverity: major", "minSeverity: HUGE"))
    with pytest.raises(ConfigError, match=rf"NINJAHOOK_ROUTES: {path}:14: .*unknown severity"):
        make_app(routes_file=str(path))


def test_routes_check_cli(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD)
    runner = CliRunner()
    ok = runner.invoke(cli, ["routes", "check", "--file", str(path)], env=ENV)
    assert ok.exit_code == 0, ok.output
    assert "OK (1 routes, 2 destinations)" in ok.output
    assert "URL from $SLACK_URL" in ok.output and "hooks.slack.com" not in ok.output
    path.write_text(GOOD.replace("[hook, chat]", "[hook, pager]"))
    bad = runner.invoke(cli, ["routes", "check", "--file", str(path)], env=ENV)
    assert bad.exit_code == 1
    assert f"Error: {path}:20:" in bad.output and "Traceback" not in bad.output


def test_routes_test_cli_shows_matches_and_renders_without_sending(
    make_app: Callable[..., Any], settings: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD)
    app = make_app()
    with app.test_client() as client:
        payload = condition_activity(77)
        assert client.post(INGEST_PATH, json=payload, headers=WEBHOOK_HEADERS).status_code == 200
    env = {**ENV, "NINJAHOOK_DATABASE_URL": settings["database_url"]}
    args = ["--instance", settings["instance_path"], "routes", "test", "--file", str(path)]
    result = CliRunner().invoke(cli, [*args, "77"], env=env)
    assert result.exit_code == 0, result.output
    assert "route servers: MATCH (notify)" in result.output
    assert "SRV-042 needs attention" in result.output  # the route's title template
    assert '"blocks"' in result.output  # the Slack shape for the chat destination
    missing = CliRunner().invoke(cli, [*args, "78"], env=env)
    assert missing.exit_code == 1 and "no activity with id 78" in missing.output


def test_serve_stops_with_one_line_naming_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD.replace("[hook, chat]", "[hook, pager]"))
    env = {**ENV, "NINJAHOOK_ROUTES": str(path)}
    args = ["--instance", str(tmp_path / "instance"), "serve", "--no-migrate", "--port", "9"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1
    assert f"configuration: NINJAHOOK_ROUTES: {path}:20:" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("match", "reads_cache"),
    [("{}", False), ("{organization: ['Org 7']}", True), ("{nodeClass: [WINDOWS_SERVER]}", True)],
)
def test_ingest_reads_the_entity_cache_only_for_routes_that_match_on_it(
    make_app: Callable[..., Any], tmp_path: Path, match: str, reads_cache: bool
) -> None:
    from app.ingest.service import ingest_activity
    from tests.support import body, recorded_statements

    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "destinations:\n  d: {kind: webhook, url: 'http://127.0.0.1:9/'}\n"
        # Maintenance is judged from the cached device (tests/test_maintenance.py);
        # this route opts out so that only matching decides whether the cache is read.
        f"routes:\n  - {{name: r, match: {match}, destinations: [d], ignore_maintenance: true}}\n"
    )
    state = make_app(routes_file=str(routes)).app.extensions["ninjahook"]
    payload = minimal_activity(7100)  # unexpanded: names only through the cache
    with recorded_statements(state.db.engine) as statements:
        ingest_activity(state, body(payload), payload)
    cache_reads = [
        s for s in statements if s.lstrip().upper().startswith("SELECT") and "devices" in s
    ]
    assert bool(cache_reads) is reads_cache
