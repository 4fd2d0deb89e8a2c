"""Concurrency: 1,000 deliveries of one id from 50 connections store exactly one row.

Once across the 2 workers of one gunicorn server, once across 2 separate gunicorn
servers sharing one database (PostgreSQL, and the same SQLite file on one host).
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.reliability.figures import FigureBook, Figures
from tests.reliability.harness import lost_ids, server_env, stored_counts
from tests.support import INGEST_PATH, WEBHOOK_HEADERS, GunicornServer, body, condition_activity

pytestmark = pytest.mark.slow

DELIVERIES = 1000
CONNECTIONS = 50
ACTIVITY_ID = 4_200_000_001


def deliver_one_id_concurrently(urls: list[str]) -> tuple[Counter[int], Counter[bool]]:
    """POST the same activity DELIVERIES times from CONNECTIONS threads, spread over ``urls``.

    Returns the statuses and the ``duplicate`` flags of the answers.
    """
    raw = body(condition_activity(ACTIVITY_ID))
    statuses: Counter[int] = Counter()
    duplicates: Counter[bool] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(CONNECTIONS)

    def connection(index: int) -> None:
        url = urls[index % len(urls)] + INGEST_PATH
        try:
            with httpx.Client(timeout=60) as client:
                start.wait(30)
                for _ in range(DELIVERIES // CONNECTIONS):
                    r = client.post(url, content=raw, headers=WEBHOOK_HEADERS)
                    with lock:
                        statuses[r.status_code] += 1
                        if r.status_code == 200:
                            duplicates[r.json()["duplicate"]] += 1
        except BaseException as exc:  # reported below, with the statuses
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=connection, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [], errors[:3]
    return statuses, duplicates


def _check(database_url: str, statuses: Counter[int], duplicates: Counter[bool]) -> tuple[int, int]:
    stored, rejected = stored_counts(database_url)
    assert statuses == Counter({200: DELIVERIES}), statuses
    # Exactly one answer says "new"; every other one is a duplicate of it.
    assert duplicates == Counter({False: 1, True: DELIVERIES - 1}), duplicates
    assert (stored, rejected) == (1, 0)
    assert lost_ids(database_url, [ACTIVITY_ID]) == set()
    return stored, rejected


def _backend(database_url: str) -> str:
    return "postgresql" if "postgresql" in database_url else "sqlite"


def test_one_id_from_50_connections_across_2_workers_is_one_row(
    database_url: str, tmp_path: Path, figures: FigureBook
) -> None:
    server = GunicornServer(server_env(database_url, tmp_path / "instance"), workers=2).start()
    try:
        statuses, duplicates = deliver_one_id_concurrently([server.url])
    finally:
        server.stop()
    stored, _ = _check(database_url, statuses, duplicates)
    figures.record(
        Figures(
            "1,000 x one id, 50 connections, 2 workers",
            _backend(database_url),
            DELIVERIES,
            statuses[200],
            stored,
            0,
            "every answer 200, one row",
        )
    )


def test_one_id_from_50_connections_across_2_servers_is_one_row(
    database_url: str, tmp_path: Path, figures: FigureBook
) -> None:
    servers = [
        GunicornServer(server_env(database_url, tmp_path / f"instance{i}"), workers=1)
        for i in range(2)
    ]
    try:
        for server in servers:
            server.start()
        statuses, duplicates = deliver_one_id_concurrently([s.url for s in servers])
    finally:
        for server in servers:
            server.stop()
    stored, _ = _check(database_url, statuses, duplicates)
    figures.record(
        Figures(
            "1,000 x one id, 50 connections, 2 servers sharing the database",
            _backend(database_url),
            DELIVERIES,
            statuses[200],
            stored,
            0,
            "every answer 200, one row",
        )
    )
