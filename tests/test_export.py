"""Export: ``ninjahook export`` and ``GET /activities/export``, JSON Lines and CSV, filters,
atomic file output, streaming, a client that goes away, and flat memory on many rows."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.activities import export
from app.storage import activities as store
from app.storage.db import Database
from tests.support import (
    API_HEADERS,
    API_TOKEN,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    LiveServer,
    condition_activity,
    deliver,
    run_cli,
)

NINJAHOOK = str(Path(sys.executable).with_name("ninjahook"))
T0 = 1764300000.0

# A body as a sender may format it: pretty-printed over several lines (CRLF too), a
# number literal a float round trip would change, an escaped newline inside a string.
PRETTY_RAW = (
    b'{\n  "id": 100,\r\n  "activityTime": 1764303000.10000000000000000001,\n'
    b'  "deviceId": 101,\n  "activityType": "SYSTEM",\n  "statusCode": "NODE_MANUALLY_APPROVED",\n'
    b'  "message": "line one\\nline two \\u00e9",\n  "data": {"big": 12345678901234567890123}\n}'
)


@pytest.fixture
def seeded(client: Any) -> dict[int, bytes]:
    """Activities 1-12 (devices 100-102, organizations 1-2, TRIGGERED/RESET, one a minute
    from T0) and 100 (a pretty-printed body); returns the raw bodies by id."""
    raws: dict[int, bytes] = {}
    for i in range(1, 13):
        payload = condition_activity(
            i,
            device_id=100 + i % 3,
            organization_id=1 + i % 2,
            status="TRIGGERED" if i % 2 else "RESET",
            activity_time=T0 + i * 60,
            message=f'message number {i}, with "quotes", commas and\na newline',
        )
        deliver(client, payload)
    r = client.post(INGEST_PATH, content=PRETTY_RAW, headers=WEBHOOK_HEADERS)
    assert r.status_code == 200, r.text
    for i in [*range(1, 13), 100]:
        raw = client.get(f"/activities/{i}/raw", headers=API_HEADERS).content
        raws[i] = raw
    return raws


def cli_env(settings: dict[str, Any]) -> dict[str, str]:
    return {
        "NINJAHOOK_INSTANCE_PATH": settings["instance_path"],
        "NINJAHOOK_DATABASE_URL": settings["database_url"],
    }


def jsonl_ids(data: bytes) -> list[int]:
    assert data.endswith(b"\n") or data == b""
    return [json.loads(line)["id"] for line in data.splitlines()]


# --- JSON Lines --------------------------------------------------------------------------


def test_cli_jsonl_is_the_original_payloads_one_a_line(
    seeded: dict[int, bytes], settings: dict[str, Any]
) -> None:
    result = run_cli(["export"], env=cli_env(settings))
    assert result.exit_code == 0, result.output
    lines = result.stdout_bytes.split(b"\n")
    assert lines[-1] == b""  # every line ends with a newline
    lines = lines[:-1]
    assert len(lines) == 13
    # Oldest id first; a one-line body is written byte for byte.
    for i, line in zip(range(1, 13), lines, strict=False):
        assert line == seeded[i]
    # The pretty-printed body: its CR/LF (JSON whitespace) became spaces, nothing else moved.
    pretty = lines[12]
    assert pretty == PRETTY_RAW.replace(b"\r", b" ").replace(b"\n", b" ")
    assert b"1764303000.10000000000000000001" in pretty  # no float round trip
    assert json.loads(pretty) == json.loads(PRETTY_RAW)
    assert json.loads(pretty)["message"] == "line one\nline two \u00e9"
    # Off a terminal: only the summary line on stderr.
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("exported 13 activities (")
    assert "jsonl) to stdout in " in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--device", "101"], [1, 4, 7, 10, 100]),
        # 100 carries only deviceId 101, which the cache places in organization 1.
        (["--organization", "1"], [2, 4, 6, 8, 10, 12, 100]),
        (["--type", "SYSTEM"], [100]),
        (["--status", "RESET", "--device", "100"], [6, 12]),
        # T0 is 2025-11-28T03:20:00Z; activity i is at T0 + i minutes; until is exclusive.
        (["--since", str(T0 + 300), "--until", "2025-11-28T03:30:00Z"], [5, 6, 7, 8, 9]),
        (["--since", "2025-11-28T03:30:00", "--type", "CONDITION"], [10, 11, 12]),
        (["--q", "NUMBER 1"], [1, 10, 11, 12]),
        (["--organization", "99"], []),
    ],
)
def test_cli_filters(
    seeded: dict[int, bytes], settings: dict[str, Any], args: list[str], expected: list[int]
) -> None:
    result = run_cli(["export", *args], env=cli_env(settings))
    assert result.exit_code == 0, result.output
    assert jsonl_ids(result.stdout_bytes) == expected
    assert result.stderr.startswith(f"exported {len(expected)} activities")


def test_cli_rejects_a_bad_time(settings: dict[str, Any], seeded: dict[int, bytes]) -> None:
    result = run_cli(["export", "--since", "yesterday"], env=cli_env(settings))
    assert result.exit_code == 2
    assert "--since" in result.output and "ISO 8601" in result.output


def test_small_batches_cover_every_row_once(seeded: dict[int, bytes], state: Any) -> None:
    # Pages of 2 ids, reads of one body each: the keyset walk neither skips nor repeats.
    chunks = list(
        export.export_chunks(state.db, store.ActivityFilter(), "jsonl", batch_rows=2, batch_bytes=1)
    )
    assert [count for _chunk, count in chunks] == [1] * 13
    assert jsonl_ids(b"".join(chunk for chunk, _ in chunks)) == [*range(1, 13), 100]
    pages = list(
        export.export_chunks(state.db, store.ActivityFilter(device_id=100), "jsonl", batch_rows=2)
    )
    assert jsonl_ids(b"".join(chunk for chunk, _ in pages)) == [3, 6, 9, 12]


# --- CSV ----------------------------------------------------------------------------------


def test_cli_csv_has_a_header_and_the_stored_columns(
    seeded: dict[int, bytes], settings: dict[str, Any]
) -> None:
    result = run_cli(
        ["export", "--format", "csv", "--organization", "2", "--status", "TRIGGERED"],
        env=cli_env(settings),
    )
    assert result.exit_code == 0, result.output
    text = result.stdout_bytes.decode()
    reader = csv.reader(io.StringIO(text, newline=""))
    header, *rows = list(reader)
    assert tuple(header) == export.CSV_COLUMNS == tuple(store.ACTIVITY_COLUMNS)
    assert [int(r[0]) for r in rows] == [1, 3, 5, 7, 9, 11]
    first = dict(zip(header, rows[0], strict=True))
    assert first["activityTime"] == repr(T0 + 60)
    assert first["deviceId"] == "101"
    assert first["organizationId"] == "2"
    assert first["statusCode"] == "TRIGGERED"
    assert first["message"] == 'message number 1, with "quotes", commas and\na newline'
    assert first["userId"] == ""  # NULL
    assert first["receivedAt"].endswith("Z")
    assert result.stderr.startswith("exported 6 activities (")


def test_progress_on_a_terminal(seeded: dict[int, bytes], settings: dict[str, Any]) -> None:
    import pty

    env = {k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")}
    env.update(cli_env(settings), TERM="xterm", COLUMNS="100")
    env.pop("NO_COLOR", None)
    main, terminal = pty.openpty()
    proc = subprocess.Popen(
        [NINJAHOOK, "export", "--format", "csv"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    out, _ = proc.communicate(timeout=60)
    shown = b""
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not data:
            break
        shown += data
    os.close(main)
    assert proc.returncode == 0
    rows = list(csv.reader(io.StringIO(out.decode(), newline="")))
    assert len(rows) == 14  # stdout carries only the CSV: header and 13 rows
    text = shown.decode(errors="replace")
    assert "exporting" in text  # rich's progress line (never off a terminal)
    assert "exported 13 activities" in text


def test_a_full_disk_is_named_as_such(seeded: dict[int, bytes], settings: dict[str, Any]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")}
    env.update(cli_env(settings))
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [NINJAHOOK, "export", "--device", "100"], env=env, stdout=full, stderr=subprocess.PIPE
        )
    assert proc.returncode == 1
    assert proc.stderr.decode() == "Error: cannot write stdout: No space left on device\n"


# --- file output --------------------------------------------------------------------------


def test_output_file_is_written_whole_then_renamed(
    seeded: dict[int, bytes],
    settings: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = tmp_path / "out" / "export.jsonl"
    target.parent.mkdir()
    target.write_bytes(b"the previous export\n")
    seen_during: list[bytes] = []
    real = export.export_chunks

    def watched(*args: Any, **kwargs: Any) -> Any:
        for chunk in real(*args, **{**kwargs, "batch_rows": 3}):
            seen_during.append(target.read_bytes())  # while the export is being written
            yield chunk

    monkeypatch.setattr(export, "export_chunks", watched)
    result = run_cli(["export", "--output", str(target)], env=cli_env(settings))
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b""
    assert set(seen_during) == {b"the previous export\n"}
    assert len(seen_during) == 5  # the export was written in several chunks
    assert jsonl_ids(target.read_bytes()) == [*range(1, 13), 100]
    assert sorted(p.name for p in target.parent.iterdir()) == ["export.jsonl"]
    assert f"to {target} in " in result.stderr


def test_a_failed_export_leaves_the_previous_file_and_no_temporary_file(
    settings: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "export.csv"
    target.write_bytes(b"the previous export\n")
    broken = tmp_path / "empty.sqlite3"
    sa.create_engine(f"sqlite:///{broken}").connect().close()  # a file without tables
    env = {**cli_env(settings), "NINJAHOOK_DATABASE_URL": f"sqlite:///{broken}"}
    result = run_cli(["export", "--format", "csv", "--output", str(target)], env=env)
    assert result.exit_code == 1
    assert "cannot read" in result.output and "no such table" in result.output
    assert "Traceback" not in result.output
    assert target.read_bytes() == b"the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --- HTTP ---------------------------------------------------------------------------------


def test_api_needs_a_read_token(client: Any) -> None:
    assert client.get("/activities/export").status_code == 401
    from tests.support import WEBHOOK_TOKEN

    r = client.get("/activities/export", headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
    assert r.status_code == 401


def test_api_jsonl_with_filters(seeded: dict[int, bytes], client: Any) -> None:
    r = client.get("/activities/export?deviceId=101", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = r.content.split(b"\n")
    assert lines[:-1] == [
        *(seeded[i] for i in (1, 4, 7, 10)),
        PRETTY_RAW.replace(b"\r", b" ").replace(b"\n", b" "),
    ]
    r = client.get(
        "/activities/export?format=jsonl&statusCode=RESET&since=1764300300&until=2025-11-28T03:30:00Z",
        headers=API_HEADERS,
    )
    assert jsonl_ids(r.content) == [6, 8]
    r = client.get("/activities/export?q=number%2011", headers=API_HEADERS)
    assert jsonl_ids(r.content) == [11]


def test_api_csv_with_filters(seeded: dict[int, bytes], client: Any) -> None:
    r = client.get(
        "/activities/export?format=csv&organizationId=1&activityType=CONDITION",
        headers=API_HEADERS,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    header, *rows = list(csv.reader(io.StringIO(r.text, newline="")))
    assert tuple(header) == export.CSV_COLUMNS
    assert [int(row[0]) for row in rows] == [2, 4, 6, 8, 10, 12]
    r = client.get("/activities/export?format=csv&deviceId=999", headers=API_HEADERS)
    assert list(csv.reader(io.StringIO(r.text))) == [list(export.CSV_COLUMNS)]


@pytest.mark.parametrize(
    "query", ["format=xml", "since=yesterday", "deviceId=abc", "until=2026-13-01"]
)
def test_api_bad_parameters_are_400(client: Any, query: str) -> None:
    r = client.get(f"/activities/export?{query}", headers=API_HEADERS)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"


# --- many rows ----------------------------------------------------------------------------


def bulk_insert(db: Database, count: int, *, start: int = 1) -> None:
    """``count`` activities with ids ``start``… in one INSERT … SELECT: a recursive CTE on
    SQLite, generate_series on PostgreSQL. Bodies are about 300 bytes of valid JSON."""
    stop = start + count - 1
    body = (
        "'{\"id\":' || i || ',\"activityTime\":' || (i + 1764300000) || "
        '\',"deviceId":\' || (1 + i % 50) || \',"activityType":"CONDITION",'
        '"statusCode":"TRIGGERED","sourceName":"Disk Free Space < 10%",'
        '"data":{"message":{"code":"condition_disk_free","params":'
        '{"threshold":"10","padding":"\' || i || \'-0123456789abcdefghijklmnopqrstuvwxyz'
        "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\"}}}}'"
    )
    columns = (
        "id, activity_time, device_id, organization_id, activity_type, status_code, "
        "source_name, source, received_at, raw"
    )
    values = (
        "i, i + 1764300000.0, 1 + i % 50, 1 + i % 7, 'CONDITION', 'TRIGGERED', "
        "'Disk Free Space < 10%', 'webhook', i + 1764300000.0"
    )
    if db.is_sqlite:
        sql = (
            f"WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n "
            f"WHERE i < {stop}) INSERT INTO activities ({columns}) "
            f"SELECT {values}, CAST({body} AS BLOB) FROM n"
        )
    else:
        sql = (
            f"INSERT INTO activities ({columns}) SELECT {values}, "
            f"convert_to({body}, 'UTF8') FROM generate_series({start}, {stop}) AS i"
        )
    with db.begin() as conn:
        conn.execute(sa.text(sql))


# The command as the ``ninjahook`` script runs it, then the process's own peak RSS. VmHWM
# of /proc/self/status is the high-water mark of this program's memory; the ru_maxrss
# that wait4/getrusage report also counts the memory of the process it was forked from
# (pytest's, copied at fork), which would hide a regression smaller than pytest itself.
PEAK_RSS_WRAPPER = """
import sys
from app.cli.main import main
try:
    main(sys.argv[1:], prog_name="ninjahook", standalone_mode=False)
finally:
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    sys.stderr.write("peak-rss-kb " + hwm.split()[1] + "\\n")
"""


def export_peak_rss(settings: dict[str, Any], fmt: str = "jsonl") -> tuple[int, str]:
    """Run ``ninjahook export`` in a subprocess (stdout to /dev/null); its peak RSS in
    bytes and its stderr (without the peak line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")}
    env.update(cli_env(settings))
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, "export", "--format", fmt],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    rest, _, peak = stderr.rstrip("\n").rpartition("\n")
    assert peak.startswith("peak-rss-kb "), stderr
    return int(peak.split()[1]) * 1024, rest


MB = 1024 * 1024
MEMORY_SLACK = 40 * MB


def _flat_memory(settings: dict[str, Any], state: Any, rows: int, fmt: str) -> None:
    bulk_insert(state.db, 1000)
    small, stderr = export_peak_rss(settings, fmt)
    assert stderr.startswith("exported 1000 activities")
    bulk_insert(state.db, rows - 1000, start=1001)
    large, stderr = export_peak_rss(settings, fmt)
    assert stderr.startswith(f"exported {rows} activities")
    print(
        f"\n{fmt}: peak RSS {small / MB:.1f} MB (1,000 rows), {large / MB:.1f} MB ({rows:,} rows)"
    )
    assert large < small + MEMORY_SLACK, (small / MB, large / MB)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_memory_stays_flat_on_20000_rows(settings: dict[str, Any], state: Any, fmt: str) -> None:
    _flat_memory(settings, state, 20_000, fmt)


@pytest.mark.slow
def test_memory_stays_flat_on_1000000_rows(settings: dict[str, Any], state: Any) -> None:
    _flat_memory(settings, state, 1_000_000, "jsonl")


def test_a_client_that_goes_away_stops_the_export(
    app: Any, state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulk_insert(state.db, 100_000)
    monkeypatch.setattr(export, "BATCH_ROWS", 1000)  # 100 pages of ids
    pages: list[int] = []
    real = store.export_sizes

    def counted(*args: Any, **kwargs: Any) -> Any:
        pages.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "export_sizes", counted)
    server = LiveServer(app).start()
    try:
        with (
            httpx.Client(base_url=server.url, timeout=30) as http,
            http.stream(
                "GET", "/activities/export", headers={"Authorization": f"Bearer {API_TOKEN}"}
            ) as r,
        ):
            assert r.status_code == 200
            assert r.headers["transfer-encoding"] == "chunked"  # streamed, not buffered
            first = next(r.iter_raw())
            assert first.startswith(b'{"id":1,')
        # The connection is closed: the export stops within a page, and gives back
        # every connection it took.
        deadline = time.monotonic() + 10
        settled = -1
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if len(pages) == settled:
                break
            settled = len(pages)
        assert len(pages) == settled
        assert settled < 50, settled  # of the 100 a whole export reads
        assert state.db.engine.pool.checkedout() == 0
    finally:
        server.stop()
