"""One way for a command to fail on the database (one line naming the database, password
hidden, and the cause; exit status 1), programming errors not hidden behind it, and
`ninjahook configure` validating everything before it changes anything in NinjaOne."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.cli.context import database_errors
from app.ninjaone.emulator import Emulator
from tests.support import free_port, ninjaone_env, run_cli

# Commands that only read the database, and ones that write.
READS = [["rejected", "list"], ["deliveries", "list"]]
WRITES = [["prune", "--days", "30"], ["alerts", "rebuild"], ["deliveries", "retry"]]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(history=3) as emu:
        yield emu


def check_one_line(output: str, *expected: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    for text in expected:
        assert text in lines[0], (text, lines[0])


def test_configure_with_an_invalid_routes_file_sends_nothing_to_ninjaone(
    emulator: Emulator, settings: dict[str, Any], tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {name: all, destinations: [nowhere]}\n")
    env = {**ninjaone_env(emulator, settings), "NINJAHOOK_ROUTES": str(routes)}
    result = run_cli(["configure", "--url", "https://hooks.example.com"], env)
    assert result.exit_code == 1
    check_one_line(result.output, "NINJAHOOK_ROUTES")
    assert emulator.webhook is None
    assert not [r for r in emulator.api_requests if r.startswith("PUT")], emulator.api_requests
    assert emulator.token_requests == 0


def test_configure_with_a_bad_setting_sends_nothing_to_ninjaone(
    emulator: Emulator, settings: dict[str, Any]
) -> None:
    env = {**ninjaone_env(emulator, settings), "NINJAHOOK_MAX_BODY_BYTES": "0"}
    result = run_cli(["configure", "--url", "https://hooks.example.com"], env)
    assert result.exit_code == 1
    check_one_line(result.output, "NINJAHOOK_MAX_BODY_BYTES")
    assert emulator.webhook is None and emulator.token_requests == 0


def unreachable_postgresql() -> str:
    return f"postgresql://nobody:s3cret@127.0.0.1:{free_port()}/ninjahook"


@pytest.mark.parametrize("args", READS + WRITES, ids=lambda a: " ".join(a))
def test_an_unreachable_postgresql_is_one_line(args: list[str], tmp_path: Path) -> None:
    url = unreachable_postgresql()
    env = {"NINJAHOOK_DATABASE_URL": url, "NINJAHOOK_INSTANCE_PATH": str(tmp_path / "i")}
    result = run_cli(args, env)
    assert result.exit_code == 1, result.output
    check_one_line(result.output, "postgresql+psycopg://nobody:***@127.0.0.1", "OperationalError")
    assert "s3cret" not in result.output


@pytest.mark.parametrize("args", READS, ids=lambda a: " ".join(a))
def test_a_read_of_a_sqlite_file_in_a_missing_folder_is_one_line(
    args: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "missing" / "ninjahook.sqlite3"
    env = {"NINJAHOOK_DATABASE_URL": f"sqlite:///{path}"}
    result = run_cli(args, env)
    assert result.exit_code == 1, result.output
    check_one_line(result.output, str(path), "no such file")
    assert not path.parent.exists()  # a read creates nothing


@pytest.mark.parametrize("args", WRITES, ids=lambda a: " ".join(a))
def test_a_write_to_a_sqlite_file_that_cannot_be_made_is_one_line(
    args: list[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = blocker / "ninjahook.sqlite3"  # its folder is a file: fails even for root
    result = run_cli(args, {"NINJAHOOK_DATABASE_URL": f"sqlite:///{path}"})
    assert result.exit_code == 1, result.output
    check_one_line(result.output, str(path))


def test_a_programming_error_is_not_reported_as_a_database_failure() -> None:
    with pytest.raises(TypeError), database_errors("sqlite:///x", "read"):
        raise TypeError("a bug")
