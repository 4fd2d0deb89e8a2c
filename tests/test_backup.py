"""`ninjahook backup` and `ninjahook restore`: a live SQLite database under load, and PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.storage.backup import in_use
from tests.support import (
    API_HEADERS,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    condition_activity,
    run_cli,
    start_gunicorn,
)


def activity_ids(path: Path) -> set[int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM activities")}
    finally:
        conn.close()


def integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


class Poster(threading.Thread):
    """Posts new activities one after another and records each acknowledged id with
    the time (monotonic) its 200 arrived."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.acked: list[tuple[int, float]] = []
        self.posted: set[int] = set()
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        next_id = 900_000
        with httpx.Client(base_url=self.url, headers=WEBHOOK_HEADERS, timeout=10) as client:
            while not self.stop.is_set():
                next_id += 1
                self.posted.add(next_id)
                r = client.post(INGEST_PATH, json=condition_activity(next_id))
                if r.status_code == 200:
                    self.acked.append((next_id, time.monotonic()))
                else:
                    self.failures += 1

    def acked_before(self, moment: float) -> set[int]:
        return {i for i, t in list(self.acked) if t < moment}


def test_backup_under_load_then_restore_into_the_stopped_instance(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    database = instance / "ninjahook.sqlite3"
    url = f"sqlite:///{database}"
    env = {"NINJAHOOK_INSTANCE_PATH": str(instance), "NINJAHOOK_DATABASE_URL": url}
    copy = tmp_path / "copy.sqlite3"
    server = start_gunicorn(url, instance, workers=2)
    poster = Poster(server.url)
    try:
        poster.start()
        time.sleep(1.5)
        assert len(poster.acked) > 20, "the load did not start"
        started = time.monotonic()
        # A few pages per step: the copy takes many steps while deliveries commit.
        result = run_cli(["backup", "--pages-per-step", "4", str(copy)], env=env)
        finished = time.monotonic()
        time.sleep(1.0)  # the server keeps ingesting after the backup
        poster.stop.set()
        poster.join(15)
        assert result.exit_code == 0, result.output
        # Off a terminal: the rows per table and one final line, no progress.
        lines = result.output.strip().splitlines()
        assert lines[-1].startswith(f"backed up {database} to {copy}:")
        assert "integrity ok" in lines[-1]
        assert any(line.split() == ["alembic_version", "1"] for line in lines)

        in_copy = activity_ids(copy)
        before = poster.acked_before(started)
        assert before and before <= in_copy  # everything acknowledged before the backup
        assert in_copy <= poster.posted
        assert integrity(copy) == ["ok"]
        assert ["activities", str(len(in_copy))] in [line.split() for line in lines]
        assert poster.acked_before(float("inf")) - poster.acked_before(finished), (
            "no delivery was acknowledged after the backup: it did not run under load"
        )
        assert poster.failures == 0

        # The server runs: restore refuses and leaves the database alone.
        refused = run_cli(["restore", str(copy)], env=env)
        assert refused.exit_code == 1
        assert "a ninjahook server is running" in refused.output
        assert "Traceback" not in refused.output
    finally:
        poster.stop.set()
        assert server.stop() == 0

    live = activity_ids(database)
    assert poster.acked_before(float("inf")) <= live
    assert len(live) > len(in_copy)  # ingest went on after the backup

    restored = run_cli(["restore", str(copy)], env=env)
    assert restored.exit_code == 0, restored.output
    assert activity_ids(database) == in_copy
    baks = list(instance.glob("ninjahook.sqlite3.*.bak"))
    assert len(baks) == 1 and f"kept the replaced database as {baks[0]}" in restored.output
    assert activity_ids(baks[0]) == live  # the replaced database, whole
    assert "is at revision" in restored.output  # migrated after the swap
    assert integrity(database) == ["ok"]

    # The restored instance serves what the backup held.
    server = start_gunicorn(url, instance, workers=1)
    try:
        some = min(before)
        r = httpx.get(f"{server.url}/activities/{some}", headers=API_HEADERS)
        assert r.status_code == 200 and r.json()["id"] == some
        gone = max(live - in_copy)
        assert httpx.get(f"{server.url}/activities/{gone}", headers=API_HEADERS).status_code == 404
    finally:
        assert server.stop() == 0


def _migrated_instance(tmp_path: Path) -> dict[str, str]:
    env = {"NINJAHOOK_INSTANCE_PATH": str(tmp_path / "instance")}
    assert run_cli(["migrate"], env=env).exit_code == 0
    return env


def test_backup_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    env = _migrated_instance(tmp_path)
    target = tmp_path / "copy.sqlite3"
    target.write_bytes(b"precious")
    refused = run_cli(["backup", str(target)], env=env)
    assert refused.exit_code == 1
    assert "exists (use --force to overwrite it)" in refused.output
    assert target.read_bytes() == b"precious"
    forced = run_cli(["backup", "--force", str(target)], env=env)
    assert forced.exit_code == 0, forced.output
    assert integrity(target) == ["ok"]
    assert not list(tmp_path.glob(".copy.sqlite3.*"))  # no partial file left behind


def test_backup_without_a_database_fails_with_one_line(tmp_path: Path) -> None:
    result = run_cli(
        ["backup", str(tmp_path / "copy.sqlite3")],
        env={"NINJAHOOK_INSTANCE_PATH": str(tmp_path / "empty")},
    )
    assert result.exit_code == 1
    assert "no database at" in result.output
    assert not (tmp_path / "copy.sqlite3").exists()


def test_restore_into_an_instance_without_a_database(tmp_path: Path) -> None:
    source_env = _migrated_instance(tmp_path / "a")
    copy = tmp_path / "copy.sqlite3"
    assert run_cli(["backup", str(copy)], env=source_env).exit_code == 0
    target = tmp_path / "b" / "instance"
    result = run_cli(["restore", str(copy)], env={"NINJAHOOK_INSTANCE_PATH": str(target)})
    assert result.exit_code == 0, result.output
    assert "kept the replaced database" not in result.output
    assert (target / "ninjahook.sqlite3").is_file()
    assert not list(target.glob("*.bak"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a database" * 100, "is not a usable SQLite database"),
        (None, "is not a ninjahook database"),
    ],
)
def test_restore_refuses_what_is_not_a_ninjahook_backup(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    env = _migrated_instance(tmp_path)
    database = tmp_path / "instance" / "ninjahook.sqlite3"
    before = database.read_bytes()
    source = tmp_path / "other.sqlite3"
    if content is None:
        conn = sqlite3.connect(source)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
    else:
        source.write_bytes(content)
    result = run_cli(["restore", str(source)], env=env)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert database.read_bytes() == before
    assert not list(database.parent.glob("*.bak"))


def test_in_use_sees_another_process_holding_the_database(tmp_path: Path) -> None:
    env = _migrated_instance(tmp_path)
    database = Path(env["NINJAHOOK_INSTANCE_PATH"]) / "ninjahook.sqlite3"
    assert not in_use(database)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('PRAGMA journal_mode=WAL'); c.execute('SELECT 1 FROM activities'); "
            "print('open', flush=True); sys.stdin.read()",
            str(database),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert in_use(database)
        refused = run_cli(["restore", str(database)], env=env)
        assert refused.exit_code == 1
        assert "another process has" in refused.output
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    assert not in_use(database)


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_postgresql_points_at_pg_dump_and_pg_restore(command: str, tmp_path: Path) -> None:
    url = "postgresql://ninja:s3cret-pw@db.example.net:5433/ninjahook?sslmode=require"
    result = run_cli(
        ["--database-url", url, command, str(tmp_path / "nh.dump")],
        env={"NINJAHOOK_INSTANCE_PATH": str(tmp_path / "instance")},
    )
    assert result.exit_code == 2
    assert "s3cret-pw" not in result.output
    target = "'postgresql://ninja@db.example.net:5433/ninjahook?sslmode=require'"
    if command == "backup":
        assert f"pg_dump --format=custom --file={tmp_path / 'nh.dump'} {target}" in result.output
    else:
        assert f"--dbname={target} {tmp_path / 'nh.dump'}" in result.output
        assert "pg_restore --clean --if-exists" in result.output
        assert "ninjahook migrate" in result.output
    assert "PGPASSWORD" in result.output
    assert not (tmp_path / "nh.dump").exists()


def test_pages_per_step_default_matches_storage() -> None:
    from app.cli import backup as cli_backup
    from app.storage import backup as storage_backup

    assert cli_backup.PAGES_PER_STEP == storage_backup.PAGES_PER_STEP
