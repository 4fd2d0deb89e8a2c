"""`q` on /activities through the text indexes (migration 0005): the same answers as a scan.

`q` is a case-insensitive substring of message or subject in which ``%`` and ``_`` are
literal. On SQLite a q of three or more characters goes through the FTS5 trigram table
(kept in sync by triggers), on PostgreSQL through pg_trgm indexes; these tests hold both
to that meaning, after inserts, after retention deletes and across pages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.retention.service import prune_database
from app.storage import activities as store
from app.storage.db import Database
from app.storage.tables import activities
from tests.support import (
    API_HEADERS,
    BACKENDS,
    condition_activity,
    deliver,
    minimal_activity,
    scratch_database,
)

T0 = 1764300000.0
DAY = 86400.0

MESSAGES = {
    1: ("C: has 8% free space", "Disk space LOW"),
    2: ("CPU at 97% for 5 minutes", None),
    3: ("memory_pressure at 99%", "RAM"),
    4: ("Backup job 'Nightly_Full' failed", "Backup FAILED"),
    5: ("Backup job completed", None),
    6: ("Patch KB5034441 installed", "Patches"),
    7: (None, "Subject only: certificate expires"),
}


@pytest.fixture
def searchable(client: Any) -> Any:
    for activity_id, (message, subject) in MESSAGES.items():
        payload = condition_activity(activity_id, activity_time=T0 + activity_id)
        for key, value in (("message", message), ("subject", subject)):
            if value is None:
                payload.pop(key, None)
            else:
                payload[key] = value
        deliver(client, payload)
    return client


def found(client: Any, q: str, **filters: str) -> list[int]:
    """The ids /activities answers for ``q`` (and other query parameters), one page."""
    params = {"q": q, "limit": "100", **filters}
    r = client.get("/activities", params=params, headers=API_HEADERS)
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("backup job", [5, 4]),  # through the text index: 3+ characters
        ("BACKUP JOB", [5, 4]),  # case-insensitive
        ("failed", [4]),  # in message and subject: one row
        ("low", [1]),  # only in the subject
        ("certificate", [7]),  # no message at all
        ("8% free", [1]),  # a literal %, not a wildcard
        ("97%", [2]),
        ("y_p", [3]),  # a literal underscore
        ("ly_fu", [4]),
        ("_", [4, 3]),  # shorter than a trigram: the scan, same meaning
        ("%", [3, 2, 1]),
        ("ra", [3]),  # "RAM" and "pressure at": case-insensitive
        ("b%j", []),  # would match "Backup job" if % were a wildcard
        ("k_5", []),  # would match "KB5034441" if _ were a wildcard
        ('"backup"', []),  # FTS query syntax is text, not syntax
        ("backup OR patch", []),
        ("KB5034441 installed", [6]),
    ],
)
def test_q_is_a_case_insensitive_literal_substring(
    searchable: Any, q: str, expected: list[int]
) -> None:
    assert found(searchable, q) == expected


def test_q_combines_with_other_filters(searchable: Any) -> None:
    assert found(searchable, "backup", since=f"{T0 + 5:.0f}") == [5]
    assert found(searchable, "backup", until=f"{T0 + 5:.0f}") == [4]
    assert found(searchable, "backup", deviceId="43") == []
    assert found(searchable, "backup", deviceId="42") == [5, 4]


def _fts_consistent(conn: sa.Connection) -> None:
    """SQLite: the FTS index holds exactly the activities with text (checked by FTS5)."""
    conn.exec_driver_sql("INSERT INTO activities_fts(activities_fts) VALUES ('integrity-check')")
    indexed = conn.exec_driver_sql("SELECT count(*) FROM activities_fts_docsize").scalar()
    with_text = conn.execute(
        sa.select(sa.func.count()).where(
            sa.or_(activities.c.message.is_not(None), activities.c.subject.is_not(None))
        )
    ).scalar()
    assert indexed == with_text


def test_text_index_follows_inserts_and_retention_deletes(client: Any, state: Any) -> None:
    now = T0 + 100 * DAY
    for n in range(1, 31):
        old = n <= 20  # pruned: older than 90 days
        when = T0 if old else now - n
        payload = minimal_activity(n, activityTime=when, message=f"Heartbeat {n} from SRV")
        if n % 3 == 0:
            payload["subject"] = f"Agent heartbeat {n}"
        deliver(client, payload)
    # A delivery without text is not indexed, and a redelivery adds nothing.
    no_text = minimal_activity(31, activityTime=now)
    no_text.pop("message", None)
    deliver(client, no_text)
    deliver(client, minimal_activity(30, activityTime=now - 30, message="Heartbeat 30 from SRV"))
    assert found(client, "heartbeat") == list(range(30, 0, -1))
    if state.db.is_sqlite:
        with state.db.connect() as conn:
            _fts_consistent(conn)

    # Retention counts from arrival: the old ones arrived at T0, the rest just now.
    with state.db.begin() as conn:
        conn.execute(sa.update(activities).where(activities.c.id <= 20).values(received_at=T0))
        conn.execute(sa.update(activities).where(activities.c.id > 20).values(received_at=now))
    result = prune_database(state.db, retention_days=90, batch_size=7, now=now)

    assert result.activities == 20
    assert found(client, "heartbeat") == list(range(30, 20, -1))
    assert found(client, "AGENT HEARTBEAT") == [30, 27, 24, 21]
    assert found(client, "heartbeat 1") == []  # 1 and 10..19 were pruned
    if state.db.is_sqlite:
        with state.db.connect() as conn:
            _fts_consistent(conn)


def _bulk_rows(count: int) -> list[dict[str, Any]]:
    words = ["disk", "Disk", "DISK", "cpu", "backup", "100%", "a_b"]
    rows = []
    for n in range(1, count + 1):
        message = f"{words[n % len(words)]} alert {n}" if n % 5 else None
        rows.append(
            {
                "id": n,
                "activity_time": T0 + n * 60,
                "device_id": 1 + n % 4,
                "organization_id": 1 + n % 3,
                "activity_type": "CONDITION",
                "message": message,
                "subject": "Needle" if n % 17 == 0 else None,
                "received_at": T0 + n * 60,
                "raw": json.dumps({"id": n}).encode(),
            }
        )
    return rows


def _expected(rows: list[dict[str, Any]], flt: store.ActivityFilter) -> list[int]:
    def keep(row: dict[str, Any]) -> bool:
        text = str(flt.text).lower()
        in_text = any(text in (row[c] or "").lower() for c in ("message", "subject"))
        return (
            in_text
            and (flt.device_id is None or row["device_id"] == flt.device_id)
            and (flt.since is None or row["activity_time"] >= flt.since)
            and (flt.until is None or row["activity_time"] < flt.until)
        )

    return sorted((r["id"] for r in rows if keep(r)), reverse=True)


@pytest.mark.parametrize(
    "flt",
    [
        store.ActivityFilter(text="disk"),  # common: fills pages from the first round
        store.ActivityFilter(text="needle"),  # rare: runs out of matches
        store.ActivityFilter(text="disk", device_id=3),  # rounds, then the device's index
        store.ActivityFilter(text="backup", since=T0 + 20 * 60, until=T0 + 150 * 60),
        store.ActivityFilter(text="100%", device_id=2),
        store.ActivityFilter(text="a_b"),
        store.ActivityFilter(text="sk"),  # two characters: the scan
        store.ActivityFilter(text="no such text"),
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in vars(f).items() if v is not None),
)
def test_text_pages_match_a_scan_in_every_round(
    state: Any, monkeypatch: pytest.MonkeyPatch, flt: store.ActivityFilter
) -> None:
    # Tiny rounds, so 200 rows exercise every path: the page filled in a round, the
    # matches exhausted, and the rest of the page taken from the other filters' indexes.
    monkeypatch.setattr(store, "FTS_ROUNDS", (2, 5))
    rows = _bulk_rows(200)
    with state.db.begin() as conn:
        conn.execute(sa.insert(activities), rows)
    expected = _expected(rows, flt)
    seen: list[int] = []
    before: int | None = None
    with state.db.connect() as conn:
        while True:
            page = store.list_activities(conn, flt, limit=7, before_id=before)
            seen += [r.id for r in page]
            if len(page) < 7:
                break
            before = page[-1].id
    assert seen == expected


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, unmigrated database of each configured backend."""
    with scratch_database(request.param, tmp_path, "ninjahook_search") as url:
        yield url


def test_upgrade_indexes_the_activities_stored_before_it(empty_database: str) -> None:
    db = Database(empty_database)
    try:
        db.migrate("0004")
        with db.begin() as conn:
            conn.execute(sa.insert(activities), _bulk_rows(40))
        db.migrate()
        with db.connect() as conn:
            page = store.list_activities(conn, store.ActivityFilter(text="NEEDLE"), limit=10)
            assert [r.id for r in page] == [34, 17]
            if db.is_sqlite:
                _fts_consistent(conn)
    finally:
        db.dispose()
