"""Graceful shutdown: SIGTERM during load completes the requests in flight, no 5xx, nothing lost."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.figures import FigureBook, Figures
from tests.reliability.harness import Sender, lost_ids, server_env, stored_counts, wait_for
from tests.support import INGEST_PATH, WEBHOOK_HEADERS, GunicornServer, body, condition_activity

pytestmark = pytest.mark.slow

SLOW_REQUESTS = 12
DRIP_CHUNKS = 6
DRIP_DELAY = 0.25


def test_sigterm_during_load_completes_in_flight_requests(
    database_url: str, tmp_path: Path, figures: FigureBook
) -> None:
    server = GunicornServer(
        server_env(database_url, tmp_path / "instance"),
        workers=2,
        log_path=tmp_path / "gunicorn.log",
    ).start()
    sender = Sender(server.url, connections=6).start()
    # Requests that are certainly in flight at SIGTERM: their bodies arrive in
    # pieces over ~1.5 s, and SIGTERM comes after the first piece.
    slow_results: dict[int, int | str] = {}
    first_piece_sent = threading.Barrier(SLOW_REQUESTS + 1)

    def drip(activity_id: int) -> None:
        raw = body(condition_activity(activity_id))
        step = len(raw) // DRIP_CHUNKS + 1

        def pieces() -> Iterator[bytes]:
            for i, start in enumerate(range(0, len(raw), step)):
                yield raw[start : start + step]
                if i == 0:
                    first_piece_sent.wait(10)
                time.sleep(DRIP_DELAY)

        try:
            r = httpx.post(
                server.url + INGEST_PATH, content=pieces(), headers=WEBHOOK_HEADERS, timeout=30
            )
            slow_results[activity_id] = r.status_code
        except httpx.HTTPError as exc:
            slow_results[activity_id] = type(exc).__name__

    slow_ids = list(range(9_000_001, 9_000_001 + SLOW_REQUESTS))
    threads = [threading.Thread(target=drip, args=(i,)) for i in slow_ids]
    try:
        assert wait_for(lambda: sender.acknowledged_count() >= 200, 30)
        for thread in threads:
            thread.start()
        first_piece_sent.wait(10)
        # Let the server read the headers and first piece: a connection still waiting in
        # the listen backlog is not in flight yet, and a closing listener drops it.
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        exit_code = server.proc.wait(40)
        for thread in threads:
            thread.join(30)
    finally:
        log = sender.stop()
        server.stop()

    acknowledged = log.acknowledged | {i for i, s in slow_results.items() if s == 200}
    lost = lost_ids(database_url, acknowledged)
    stored, _ = stored_counts(database_url)
    figures.record(
        Figures(
            f"SIGTERM under load ({SLOW_REQUESTS} slow requests in flight)",
            "postgresql" if "postgresql" in database_url else "sqlite",
            log.sent + SLOW_REQUESTS,
            len(acknowledged),
            stored,
            len(lost),
            f"refused after SIGTERM {sum(log.transport_errors.values())}",
        )
    )
    assert exit_code == 0
    # Every request in flight when SIGTERM arrived was completed and stored.
    assert slow_results == dict.fromkeys(slow_ids, 200)
    assert lost == set(), f"acknowledged but not stored: {sorted(lost)[:20]}"
    assert log.count(lambda s: s >= 500) == 0, log.statuses
    assert set(log.statuses) == {200}, log.statuses
