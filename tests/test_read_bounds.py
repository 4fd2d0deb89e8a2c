"""Nothing a sender stores or a reader asks for makes the receiver unbounded.

Rejected deliveries are capped in rows and bytes (the oldest go first, counted and shown
on the dashboard); lists and the dashboard show previews of long texts and bodies, cut in
SQL, with the whole at the item's own endpoint; and a production server's workers stay
small while six readers at a time page through huge stored values.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.activities.reads import list_preview
from app.ingest.rejected import TRIM_BATCH, Rejection, keep_rejected
from app.storage import activities as activity_store
from app.storage import rejected as rejected_store
from app.storage.tables import rejected_deliveries
from tests.support import (
    API_HEADERS,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    body,
    condition_activity,
    deliver,
    minimal_activity,
    start_gunicorn,
)

PREVIEW = 4096  # NINJAHOOK_PREVIEW_CHARS' default
MIB = 1024 * 1024


def reject(client: Any, size: int, tag: int) -> None:
    """POST an authenticated body of about ``size`` bytes that fails validation."""
    pad = "x" * max(0, size - 40)
    raw = json.dumps({"id": f"bad-{tag}", "pad": pad}).encode()
    r = client.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
    assert r.status_code == 400, r.text


def kept(state: Any) -> tuple[list[int], int, int]:
    """(ids newest first, bytes of bodies, dropped count) of the rejected deliveries kept."""
    with state.db.connect() as conn:
        ids = [r.id for r in rejected_store.list_rejected(conn, limit=100_000, preview=1)]
        _rows, size = rejected_store.totals(conn)
        return ids, size, rejected_store.dropped_count(conn)


def live(client: Any) -> str:
    r = client.get("/ui/live", headers=API_HEADERS)
    assert r.status_code == 200
    text: str = r.text
    return text


# --- the caps on rejected deliveries ----------------------------------------------------


def test_the_row_cap_drops_the_oldest_and_counts_them(make_app: Any) -> None:
    app = make_app(rejected_max_rows="5")
    state = app.app.extensions["ninjahook"]
    with app.test_client() as client:
        for n in range(8):
            reject(client, 200, n)
        ids, _size, dropped = kept(state)
        assert len(ids) == 5 and dropped == 3
        page = client.get("/rejected", headers=API_HEADERS).json()
        assert [json.loads(i["body"])["id"] for i in page["items"]] == [
            f"bad-{n}" for n in range(7, 2, -1)
        ]
        fragment = live(client)
        assert '<strong id="rejected-count">5</strong>' in fragment
        assert '<span id="rejected-dropped">3</span> oldest dropped' in fragment
        metrics = client.get("/metrics", headers=API_HEADERS).text
        assert "ninjahook_rejected_dropped_total 3.0" in metrics


def test_the_byte_cap_drops_the_oldest_and_cuts_a_body_larger_than_itself(
    make_app: Any,
) -> None:
    app = make_app(rejected_max_bytes="10000")
    state = app.app.extensions["ninjahook"]
    with app.test_client() as client:
        for n in range(6):
            reject(client, 3000, n)
        ids, size, dropped = kept(state)
        assert len(ids) == 3 and size <= 10000 and dropped == 3
        reject(client, 50_000, 99)  # alone larger than the cap: kept, cut to it
        ids, size, dropped = kept(state)
        assert len(ids) == 1 and size == 10000 and dropped == 6
        item = client.get(f"/rejected/{ids[0]}", headers=API_HEADERS).json()
        assert item["truncated"] is True and item["bodyBytes"] > 40_000
        assert len(item["body"].encode()) == 10000
        assert "6 oldest dropped" in live(client).replace(
            '<span id="rejected-dropped">', ""
        ).replace("</span>", "")


def test_a_lowered_cap_is_reached_in_bounded_batches(make_app: Any) -> None:
    app = make_app(rejected_max_rows="10")
    state = app.app.extensions["ninjahook"]
    with state.db.begin() as conn:
        for _ in range(3 * TRIM_BATCH + 7):
            activity_store.insert_rejected(
                conn,
                received_at=time.time(),
                reason="seeded",
                field=None,
                content_type="application/json",
                body=b"{}",
                body_bytes=2,
                truncated=False,
            )
    statements: list[str] = []
    sa.event.listen(state.db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    newest = keep_rejected(
        state,
        Rejection(
            reason="r", field=None, body=b"{}", body_bytes=2, truncated=False, content_type=None
        ),
    )
    ids, _size, dropped = kept(state)
    assert ids[0] == newest and len(ids) == 10
    assert dropped == 3 * TRIM_BATCH + 7 + 1 - 10
    deletes = [s for s in statements if s.lstrip().startswith("DELETE FROM rejected_deliveries")]
    assert len(deletes) == -(-dropped // TRIM_BATCH)  # at most TRIM_BATCH rows a statement


def test_rows_deleted_by_others_are_noticed_so_nothing_is_dropped_needlessly(
    make_app: Any,
) -> None:
    app = make_app(rejected_max_rows="5", rejected_max_bytes="5000")
    state = app.app.extensions["ninjahook"]
    with app.test_client() as client:
        for n in range(5):
            reject(client, 900, n)
        ids, _size, _dropped = kept(state)
        # Retention (or anything else) deletes two rows behind the running totals' back.
        with state.db.begin() as conn:
            conn.execute(
                sa.delete(rejected_deliveries).where(rejected_deliveries.c.id.in_(ids[-2:]))
            )
        reject(client, 900, 5)
        reject(client, 900, 6)
        ids, size, dropped = kept(state)
        assert len(ids) == 5 and dropped == 0  # there was room: nothing was dropped
        with state.db.connect() as conn:
            assert rejected_store.kept_totals(conn) == rejected_store.totals(conn) == (5, size)
        reject(client, 900, 7)  # now the caps are reached: the oldest goes
        ids, size, dropped = kept(state)
        assert len(ids) == 5 and dropped == 1 and size <= 5000


def test_keeping_one_costs_a_bounded_number_of_statements(make_app: Any) -> None:
    app = make_app(rejected_max_rows="3")
    state = app.app.extensions["ninjahook"]
    rejection = Rejection(
        reason="r", field=None, body=b"{}", body_bytes=2, truncated=False, content_type=None
    )
    for _ in range(5):
        keep_rejected(state, rejection)
    statements: list[str] = []
    sa.event.listen(state.db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    keep_rejected(state, rejection)  # at the cap: keep one, drop one
    # No statement sums the bodies: the totals are running counts (app.storage.rejected).
    assert not [s for s in statements if "sum(" in s.lower()], statements
    assert len(statements) <= 12, statements


def test_the_caps_are_settings_that_must_be_positive() -> None:
    from app.config import ConfigError, load_config

    for env in (
        "NINJAHOOK_REJECTED_MAX_ROWS",
        "NINJAHOOK_REJECTED_MAX_BYTES",
        "NINJAHOOK_PREVIEW_CHARS",
        "NINJAHOOK_LIST_PAYLOAD_BYTES",
    ):
        with pytest.raises(ConfigError, match=env):
            load_config(environ={env: "0"})
    config = load_config(environ={})
    assert (config.rejected_max_rows, config.rejected_max_bytes) == (10000, 256 * MIB)
    assert (config.preview_chars, config.list_payload_bytes) == (4096, 16384)


# --- previews in lists, the whole at the item's endpoint -----------------------------------


def test_lists_show_previews_and_the_item_endpoints_the_whole(client: Any, state: Any) -> None:
    long_message = "m" * 100_000 + "END"
    long_subject = "ß" * 5000
    deliver(client, condition_activity(1, message=long_message, subject=long_subject))
    deliver(client, minimal_activity(2, message="x" * PREVIEW))  # exactly the preview: whole
    deliver(client, minimal_activity(3, message="short"))

    page = client.get("/activities", headers=API_HEADERS).json()
    by_id = {item["id"]: item for item in page["items"]}
    assert by_id[1]["message"] == "m" * PREVIEW and by_id[1]["subject"] == "ß" * PREVIEW
    assert by_id[1]["truncated"] is True and by_id[1]["payload"] is None
    assert by_id[2]["message"] == "x" * PREVIEW and by_id[2]["truncated"] is False
    assert by_id[3]["truncated"] is False and by_id[3]["payload"]["message"] == "short"

    detail = client.get("/activities/1", headers=API_HEADERS).json()
    assert detail["message"] == long_message and detail["subject"] == long_subject
    assert detail["payload"]["message"] == long_message and detail["truncated"] is False
    raw = client.get("/activities/1/raw", headers=API_HEADERS)
    assert json.loads(raw.content)["message"] == long_message

    # The alert list previews the alert's message; its own endpoint has it whole, and
    # the history (a list) previews its activities.
    (alert,) = client.get("/alerts", headers=API_HEADERS).json()["items"]
    assert alert["message"] == "m" * PREVIEW and alert["messageTruncated"] is True
    whole = client.get(f"/alerts/{alert['ref']}", headers=API_HEADERS).json()
    assert whole["message"] == long_message and whole["messageTruncated"] is False
    assert whole["history"][0]["message"] == "m" * PREVIEW
    assert whole["history"][0]["truncated"] is True

    reject(client, 60_000, 1)
    (item,) = client.get("/rejected", headers=API_HEADERS).json()["items"]
    assert len(item["body"]) == PREVIEW and item["bodyTruncated"] is True
    assert item["truncated"] is False and item["bodyBytes"] > 60_000 - 50
    full = client.get(f"/rejected/{item['id']}", headers=API_HEADERS)
    assert full.status_code == 200
    assert full.json()["bodyTruncated"] is False
    assert json.loads(full.json()["body"])["id"] == "bad-1"
    missing = client.get("/rejected/999999", headers=API_HEADERS)
    assert missing.status_code == 404

    fragment = live(client)
    assert len(fragment) < 64 * 1024
    assert "m" * PREVIEW + "…" in fragment and "END" not in fragment


def test_the_cut_happens_in_sql(client: Any, state: Any) -> None:
    deliver(client, minimal_activity(1, message="q" * 300_000, subject="s" * 300_000))
    reject(client, 300_000, 1)
    preview = list_preview(state)
    with state.db.connect() as conn:
        (row,) = activity_store.list_activities(
            conn, activity_store.ActivityFilter(), limit=10, preview=preview
        )
        (rejected,) = rejected_store.list_rejected(conn, limit=10, preview=PREVIEW)
    # What reaches the worker is one more than the preview (to tell a cut value), no more.
    assert len(row.message) == len(row.subject) == PREVIEW + 1 and row.raw is None
    assert len(bytes(rejected.body)) == PREVIEW + 1


def test_a_payload_within_the_list_limit_is_listed(make_app: Any) -> None:
    app = make_app(list_payload_bytes="100000", preview_chars="10")
    with app.test_client() as client:
        deliver(client, minimal_activity(1, message="n" * 50_000))
        (item,) = client.get("/activities", headers=API_HEADERS).json()["items"]
        assert item["message"] == "n" * 10 and item["truncated"] is True
        assert item["payload"]["message"] == "n" * 50_000


# --- worker memory under concurrent large reads (production server) ----------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_worker_memory_stays_bounded_under_concurrent_large_reads(
    sqlite_template: Path, tmp_path: Path
) -> None:
    instance = tmp_path / "instance"
    instance.mkdir()
    database = instance / "ninjahook.sqlite3"
    shutil.copy(sqlite_template, database)
    server = start_gunicorn(f"sqlite:///{database}", instance, workers=2)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for n in range(1, 31):  # 30 activities with a 1 MB message
                payload = condition_activity(n, message=f"{n:04d}" + "a" * 1_000_000)
                r = http.post(INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS)
                assert r.status_code == 200, r.text
            for n in range(50):  # 50 rejected 1 MB bodies
                raw = json.dumps({"id": f"bad-{n}", "pad": "b" * 1_000_000}).encode()
                r = http.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
                assert r.status_code == 400
            paths = ["/rejected?limit=500", "/activities?limit=500", "/ui/live", "/alerts"]
            for path in paths:  # warm every worker's code paths up before the baseline
                for _ in range(4):
                    assert http.get(path, headers=API_HEADERS).status_code == 200
        pids = server.worker_pids()
        assert len(pids) == 2
        baseline = {pid: _rss_kib(pid) for pid in pids}
        peak = dict(baseline)
        sizes: list[tuple[str, int]] = []
        errors: list[BaseException] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for pid in pids:
                    peak[pid] = max(peak[pid], _rss_kib(pid))
                time.sleep(0.01)

        def reader() -> None:
            try:
                with httpx.Client(base_url=server.url, headers=API_HEADERS, timeout=60) as http:
                    for _ in range(5):
                        for path in paths:
                            r = http.get(path)
                            assert r.status_code == 200, (path, r.status_code)
                            sizes.append((path, len(r.content)))
            except BaseException as exc:  # reported below
                errors.append(exc)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        readers = [threading.Thread(target=reader) for _ in range(6)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(120)
        done.set()
        sampler.join(5)
        assert not errors, errors
        assert len(sizes) == 6 * 5 * len(paths)
        # Each answer is small: 50 bodies of 4 KiB, 30 messages of 4 KiB (no payloads).
        for path, size in sizes:
            assert size < 600 * 1024, (path, size)
        growth_mib = {pid: (peak[pid] - baseline[pid]) / 1024 for pid in pids}
        assert all(g < 150 for g in growth_mib.values()), growth_mib
    finally:
        assert server.stop() == 0
