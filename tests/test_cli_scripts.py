"""The command line for scripts: every listing takes --json (one document) and --jsonl
(one object a line) and prints whole ids; off a terminal tables are not cut and progress
prints nothing while it runs; every option names its environment variable in --help; exit
status 0 ok, 1 failure (one line), 2 usage."""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from app.cli.main import main
from app.ninjaone.emulator import Emulator
from tests.support import (
    FAST_DELIVERY,
    INGEST_PATH,
    ROOT,
    WEBHOOK_HEADERS,
    deliver,
    minimal_activity,
    ninjaone_env,
    one_route_file,
    run_cli,
    settle_deliveries,
)

NINJAHOOK = str(Path(sys.executable).with_name("ninjahook"))

# Every command that lists or reports something: each takes --json.
LISTINGS = [
    ["deliveries", "list"],
    ["rejected", "list"],
    ["settings"],
    ["status"],
    ["routes", "check"],
    ["sync"],
    ["backfill"],
    ["backup"],
]
# The ones that list rows take --jsonl too.
STREAMS = [["deliveries", "list"], ["rejected", "list"], ["settings"], ["sync"]]
# rich's spinner frames (braille) and the bar's characters: never off a terminal.
SPINNER = re.compile("[\u2800-\u28ff━╸╺]")
# Commands that call NinjaOne: their help names the credentials' variables.
NINJAONE_COMMANDS = [["configure"], ["disable"], ["sync"], ["backfill"], ["status"]]


def walk(group: click.Group, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    """Every command under ``group``, with the words that invoke it."""
    for name, command in sorted(group.commands.items()):
        yield [*path, name], command
        if isinstance(command, click.Group):
            yield from walk(command, [*path, name])


ALL_COMMANDS = [([], main), *walk(main, [])]


def help_of(path: list[str]) -> str:
    result = CliRunner().invoke(main, [*path, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def option_names(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def command_at(path: list[str]) -> click.Command:
    command: click.Command = main
    for word in path:
        assert isinstance(command, click.Group), path
        command = command.commands[word]
    return command


# --- help --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "command"), ALL_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_every_option_that_reads_a_variable_names_it_in_help(
    path: list[str], command: click.Command
) -> None:
    shown = help_of(path)
    flat = " ".join(shown.split())  # click wraps long lines
    for param in command.params:
        names = param.envvar if isinstance(param.envvar, list | tuple) else [param.envvar]
        for name in filter(None, names):
            assert name in flat, (path, param.name, name, shown)


def test_the_options_the_issue_names_show_their_variables() -> None:
    top = " ".join(help_of([]).split())
    assert "--instance" in top and "env var: NINJAHOOK_INSTANCE_PATH" in top
    assert "env var: NINJAHOOK_DATABASE_URL" in top
    serve = " ".join(help_of(["serve"]).split())
    assert "env var: NINJAHOOK_PORT" in serve and "env var: NINJAHOOK_HOST" in serve


@pytest.mark.parametrize("path", NINJAONE_COMMANDS, ids=" ".join)
def test_commands_that_call_ninjaone_name_the_credentials(path: list[str]) -> None:
    shown = " ".join(help_of(path).split())
    for name in ("NINJAONE_CLIENT_ID", "NINJAONE_CLIENT_SECRET", "NINJAONE_REGION"):
        assert name in shown, (path, shown)


def test_exit_statuses_are_documented_in_help_and_readme() -> None:
    shown = help_of([])
    assert "Exit status:" in shown
    assert re.search(r"^\s+0\s+success", shown, re.M)
    assert re.search(r"^\s+1\s+failure", shown, re.M)
    assert re.search(r"^\s+2\s+usage", shown, re.M)
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Command line for scripts") :]
    section = section[: section.index("\n## ")]
    for text in ("`0`", "`1`", "`2`", "--json", "--jsonl"):
        assert text in section


@pytest.mark.parametrize("path", LISTINGS, ids=" ".join)
def test_every_listing_takes_json(path: list[str]) -> None:
    names = option_names(command_at(path))
    assert "--json" in names
    if path in STREAMS:
        assert "--jsonl" in names


def test_every_list_command_is_a_listing() -> None:
    # A command named "list" added later (silences list, alerts list…) takes --json too.
    lists = [path for path, command in ALL_COMMANDS if path and path[-1] == "list"]
    assert lists
    for path in lists:
        assert {"--json", "--jsonl"} <= option_names(command_at(path)), path


# --- listings off a terminal -------------------------------------------------------------


@pytest.fixture
def dead_letters(make_app: Any, tmp_path: Path) -> list[dict[str, Any]]:
    """Three deliveries that failed for good (their destination refuses connections),
    newest first, as GET /deliveries gives them."""
    from app.notifications.reads import dead_letters as read_dead_letters

    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        port = refusing.getsockname()[1]
        routes = one_route_file(tmp_path, f"http://127.0.0.1:{port}/hook")
        app = make_app(routes_file=str(routes), **FAST_DELIVERY)
        state = app.app.extensions["ninjahook"]
        with app.test_client() as client:
            for activity_id in (701, 702, 703):
                deliver(client, minimal_activity(activity_id))
        settle_deliveries(state)
    items: list[dict[str, Any]] = read_dead_letters(state)["items"]
    assert len(items) == 3
    return items


def cli_env(settings: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        "NINJAHOOK_INSTANCE_PATH": settings["instance_path"],
        "NINJAHOOK_DATABASE_URL": settings["database_url"],
        **extra,
    }


def test_deliveries_list_piped_prints_whole_ids_in_80_columns(
    dead_letters: list[dict[str, Any]], settings: dict[str, Any]
) -> None:
    result = run_cli(["deliveries", "list", "--status", "dead"], cli_env(settings, COLUMNS="80"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for item in dead_letters:
        assert len(item["id"]) >= 32
        # Whole, on one line, with its last error whole too.
        (line,) = [line for line in lines if item["id"] in line]
        assert item["lastError"] in line
    assert "…" not in result.stdout
    assert not SPINNER.search(result.stderr)


def test_deliveries_list_json_and_jsonl(
    dead_letters: list[dict[str, Any]], settings: dict[str, Any]
) -> None:
    env = cli_env(settings)
    as_json = run_cli(["deliveries", "list", "--json"], env)
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == dead_letters  # as GET /deliveries gives them
    as_jsonl = run_cli(["deliveries", "list", "--jsonl", "--status", "dead"], env)
    assert as_jsonl.exit_code == 0, as_jsonl.output
    assert [json.loads(line) for line in as_jsonl.stdout.splitlines()] == dead_letters
    limited = run_cli(["deliveries", "list", "--jsonl", "--limit", "1"], env)
    assert [json.loads(line)["id"] for line in limited.stdout.splitlines()] == [
        dead_letters[0]["id"]
    ]
    nothing = run_cli(["deliveries", "list", "--json", "--status", "pending"], env)
    assert json.loads(nothing.stdout) == []
    none_streamed = run_cli(["deliveries", "list", "--jsonl", "--status", "pending"], env)
    assert none_streamed.exit_code == 0 and none_streamed.stdout == ""


def test_rejected_list_json_has_whole_bodies_and_the_table_whole_ids(
    client: Any, settings: dict[str, Any]
) -> None:
    long_value = "x" * 300
    bodies = [
        json.dumps({"id": 1, "deviceId": "not a number", "message": long_value}).encode(),
        b'{"id": "[/] [bold]two"}',  # printed as it is, never taken for rich markup
    ]
    for raw in bodies:
        answer = client.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
        assert answer.status_code == 400, answer.text
    env = cli_env(settings)
    as_json = run_cli(["rejected", "list", "--json"], env)
    assert as_json.exit_code == 0, as_json.output
    records = json.loads(as_json.stdout)
    assert [r["body"].encode() for r in records] == bodies[::-1]  # newest first, whole
    assert "deviceId" in records[1]["reason"]
    as_jsonl = run_cli(["rejected", "list", "--jsonl"], env)
    assert [json.loads(line) for line in as_jsonl.stdout.splitlines()] == records
    table = run_cli(["rejected", "list"], {**env, "COLUMNS": "60"})
    assert table.exit_code == 0, table.output
    for record in records:
        assert record["receivedAt"] in table.stdout
        assert record["reason"] in " ".join(table.stdout.split())
    assert '"[/] [bold]two"' in table.stdout


def test_settings_streams_and_documents(settings: dict[str, Any]) -> None:
    from app.config import SETTINGS

    as_jsonl = run_cli(["settings", "--jsonl"])
    assert as_jsonl.exit_code == 0
    rows = [json.loads(line) for line in as_jsonl.stdout.splitlines()]
    assert [row["env"] for row in rows] == [s.env for s in SETTINGS]
    assert json.loads(run_cli(["settings", "--json"]).stdout) == rows
    table = run_cli(["settings"], {"COLUMNS": "80"})
    for setting in SETTINGS:
        # Off a terminal a row is one line, its meaning whole.
        (line,) = [line for line in table.stdout.splitlines() if f" {setting.env} " in line]
        assert " ".join(setting.help.split()) in " ".join(line.split())


def test_routes_check_json(settings: dict[str, Any], tmp_path: Path) -> None:
    routes = one_route_file(tmp_path, "https://hooks.example.com/ninja")
    result = run_cli(["routes", "check", "--file", str(routes), "--json"], cli_env(settings))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["file"] == str(routes)
    assert document["destinations"] == [
        {
            "name": "d",
            "kind": "webhook",
            "target": "https://hooks.example.com/ninja",
            "signedWith": None,
        }
    ]
    assert [(r["name"], r["destinations"]) for r in document["routes"]] == [("all", ["d"])]


def test_the_two_json_options_together_are_a_usage_error(settings: dict[str, Any]) -> None:
    result = run_cli(["deliveries", "list", "--json", "--jsonl"], cli_env(settings))
    assert result.exit_code == 2
    assert "--json and --jsonl" in result.stderr


# --- a real terminal ----------------------------------------------------------------------


def run_on_a_terminal(args: list[str], env: dict[str, str], columns: int) -> str:
    """Run ``ninjahook args`` with stdout and stderr on a pseudo-terminal ``columns`` wide;
    everything it showed."""
    import fcntl
    import termios

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")}
    full_env.update(env, TERM="xterm", COLUMNS=str(columns), LINES="50")
    full_env.pop("NO_COLOR", None)
    leader, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen([NINJAHOOK, *args], env=full_env, stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        shown += data
    os.close(leader)
    assert proc.wait(timeout=60) == 0, shown.decode(errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))


@pytest.mark.parametrize("columns", [80, 120])
def test_deliveries_list_on_a_narrow_terminal_keeps_ids_whole(
    dead_letters: list[dict[str, Any]], settings: dict[str, Any], columns: int
) -> None:
    shown = run_on_a_terminal(["deliveries", "list"], cli_env(settings), columns)
    table = [line for line in shown.splitlines() if line.startswith(("┃", "│"))]
    # The table fits: the terminal does not wrap its lines.
    assert table and all(len(line) <= columns for line in table), shown
    for item in dead_letters:
        (row,) = [line for line in table if item["id"] in line]  # whole, on one line
        assert str(item["activityId"]) in row and "dead" in row
    # The columns left out to make it fit are named.
    assert "not shown at this width: " in shown and "last error" in shown
    if columns >= 120:
        assert all(item["createdAt"] in shown for item in dead_letters)


# --- progress, off a terminal and on one --------------------------------------------------


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=5, history=5) as emu:
        yield emu


def piped(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")}
    full_env.update(env)
    return subprocess.run(
        [NINJAHOOK, *args], env=full_env, capture_output=True, text=True, timeout=120
    )


def test_sync_and_backfill_piped_print_no_progress(
    emulator: Emulator, settings: dict[str, Any], client: Any
) -> None:
    env = ninjaone_env(emulator, settings)
    synced = piped(["sync", "--page-size", "4"], env)
    assert synced.returncode == 0, synced.stderr
    assert not SPINNER.search(synced.stderr), synced.stderr
    assert "0:00:0" not in synced.stderr  # no elapsed-time column left behind
    assert f"│ organizations │ {len(emulator.world.organizations)} " in synced.stdout

    as_json = piped(["sync", "--json"], env)
    assert as_json.returncode == 0, as_json.stderr
    counts = json.loads(as_json.stdout)
    assert set(counts) == {"organizations", "locations", "devices"}
    assert counts["devices"]["unchanged"] == len(emulator.world.devices)
    as_jsonl = piped(["sync", "--jsonl"], env)
    kinds = [json.loads(line)["kind"] for line in as_jsonl.stdout.splitlines()]
    assert sorted(kinds) == ["devices", "locations", "organizations"]

    backfilled = piped(["backfill", "--since", "30d", "--json"], env)
    assert backfilled.returncode == 0, backfilled.stderr
    assert not SPINNER.search(backfilled.stderr), backfilled.stderr
    result = json.loads(backfilled.stdout)
    assert result["fetched"] == result["new"] + result["present"] > 0


def test_sync_on_a_terminal_shows_progress(
    emulator: Emulator, settings: dict[str, Any], client: Any
) -> None:
    shown = run_on_a_terminal(["sync", "--page-size", "4"], ninjaone_env(emulator, settings), 100)
    assert "0:00:0" in shown  # the elapsed time of rich's live display (erased at the end)
    assert "│ organizations │" in shown


# --- exit statuses ---------------------------------------------------------------------------


def test_a_usage_error_exits_2(settings: dict[str, Any]) -> None:
    result = run_cli(["deliveries", "list", "--no-such-option"], cli_env(settings))
    assert result.exit_code == 2
    unknown = run_cli(["no-such-command"])
    assert unknown.exit_code == 2


def test_a_ninjaone_failure_exits_1_in_one_line(
    emulator: Emulator, settings: dict[str, Any], client: Any
) -> None:
    env = {**ninjaone_env(emulator, settings), "NINJAONE_CLIENT_SECRET": "wrong-secret"}
    for args in (["sync", "--json"], ["backfill", "--json"]):
        result = piped(args, env)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        (line,) = [line for line in result.stderr.splitlines() if line.strip()]
        assert line.startswith("Error: ") and "credentials" in line
        assert "wrong-secret" not in result.stderr


def test_a_database_failure_a_command_does_not_expect_exits_1_in_one_line(
    tmp_path: Path,
) -> None:
    # The worker reads the outbox of a database that was never migrated: before, a
    # traceback; now the one line every other command prints.
    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")
    routes = one_route_file(tmp_path, "https://hooks.example.com/ninja")
    env = {
        "NINJAHOOK_DATABASE_URL": f"sqlite:///{empty}",
        "NINJAHOOK_INSTANCE_PATH": str(tmp_path / "instance"),
        "NINJAHOOK_ROUTES": str(routes),
    }
    result = piped(["worker", "--drain"], env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: database sqlite:///{empty}: OperationalError: no such table")


def test_a_reader_that_goes_away_ends_the_listing_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [NINJAHOOK, "settings", "--jsonl"],
        env={k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before it writes a line: every write fails (EPIPE)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
