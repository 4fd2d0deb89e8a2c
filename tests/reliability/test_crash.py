"""Crash safety: kill -9 of workers and of the master under load loses nothing acknowledged."""

from __future__ import annotations

import os
import signal
import time
from functools import partial
from pathlib import Path

import pytest

from tests.reliability.figures import FigureBook, Figures
from tests.reliability.harness import (
    Sender,
    kill_master,
    lost_ids,
    server_env,
    stored_counts,
    wait_for,
    wait_for_workers,
)
from tests.support import GunicornServer

pytestmark = pytest.mark.slow

WORKER_KILLS = 3
MASTER_KILLS = 2


def test_kill_9_of_workers_and_master_loses_no_acknowledged_delivery(
    database_url: str, tmp_path: Path, figures: FigureBook
) -> None:
    env = server_env(database_url, tmp_path / "instance")
    server = GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log").start()
    sender = Sender(server.url, connections=8).start()
    try:
        for _ in range(WORKER_KILLS):
            # Kill only once the sender is being served, so the kill lands mid-load.
            sender.wait_for_more_acknowledgements(100)
            victim = server.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            # The master replaces the worker; the survivor keeps serving meanwhile.
            assert wait_for(partial(lambda v: v not in server.worker_pids(), victim), 10)
            wait_for_workers(server, 2)
        for _ in range(MASTER_KILLS):
            sender.wait_for_more_acknowledgements(100)
            kill_master(server)
            time.sleep(0.5)  # the sender meets a dead port, as NinjaOne would
            server = GunicornServer(env, workers=2, port=server.port, log_path=server.log_path)
            server.start()
        sender.wait_for_more_acknowledgements(100)
    finally:
        log = sender.stop()
        server.stop()

    lost = lost_ids(database_url, log.acknowledged)
    stored, _ = stored_counts(database_url)
    figures.record(
        Figures(
            "kill -9: 3 workers, then 2 masters",
            "postgresql" if "postgresql" in database_url else "sqlite",
            log.sent,
            len(log.acknowledged),
            stored,
            len(lost),
            f"transport errors {sum(log.transport_errors.values())}",
        )
    )
    assert lost == set(), f"acknowledged but not stored: {sorted(lost)[:20]}"
    # Every stored row is one of the distinct ids sent, each once (the primary key);
    # a killed process can leave a stored delivery unanswered, so stored may exceed
    # what was acknowledged, never what was sent.
    assert stored <= log.sent
    assert log.count(lambda s: s >= 500) == 0, log.statuses
