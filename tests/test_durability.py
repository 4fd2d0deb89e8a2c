"""Exactly once under concurrency, and data that survives a restart."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from app.storage import activities as store
from tests.support import (
    API_HEADERS,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    body,
    condition_activity,
    live_server,
)


def test_concurrent_duplicates_store_exactly_one_row(server: Any, state: Any) -> None:
    raw = body(condition_activity(4242))

    def send(_: int) -> tuple[int, bool]:
        with httpx.Client(timeout=30) as c:
            r = c.post(server.url + INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
            return r.status_code, r.json()["duplicate"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(send, range(64)))
    assert {status for status, _ in results} == {200}
    assert sum(1 for _, dup in results if not dup) == 1
    with state.db.connect() as conn:
        assert store.count_activities(conn) == 1


def test_concurrent_distinct_deliveries_are_all_stored(server: Any, state: Any) -> None:
    def send(i: int) -> int:
        with httpx.Client(timeout=30) as c:
            r = c.post(
                server.url + INGEST_PATH,
                content=body(condition_activity(10_000 + i)),
                headers=WEBHOOK_HEADERS,
            )
            return r.status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(send, range(200))) == {200}
    with state.db.connect() as conn:
        assert store.count_activities(conn) == 200


def test_data_survives_a_restart(make_app: Any) -> None:
    raw = json.dumps(condition_activity(5150)).encode()
    first = make_app()
    with live_server(first) as srv:
        assert (
            httpx.post(srv.url + INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS).status_code
            == 200
        )
    first.app.extensions["ninjahook"].db.dispose()
    second = make_app()
    with live_server(second) as srv:
        r = httpx.get(srv.url + "/activities/5150/raw", headers=API_HEADERS)
        assert r.status_code == 200 and r.content == raw
        again = httpx.post(srv.url + INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
        assert again.json() == {"id": 5150, "duplicate": True}
