"""Periodic tasks that run in one process only, however many workers and hosts serve.

Each task holds a lease row in the database while it runs, so the guarantee
holds across gunicorn workers and across hosts sharing PostgreSQL. Other
processes see the lease and skip.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from app.state import AppState
from app.storage import leases

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicTask:
    """``run`` every ``interval`` seconds, in one process at a time."""

    name: str
    interval: float
    run: Callable[[AppState], object]


class Scheduler:
    """Runs :class:`PeriodicTask` objects on a daemon thread until :meth:`stop`."""

    def __init__(self, state: AppState, tasks: list[PeriodicTask], tick: float = 5.0) -> None:
        self.state = state
        self.tasks = tasks
        self.tick = tick
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (no-op without tasks)."""
        if not self.tasks or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="ninjahook-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop and wait for the current task to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_due(self) -> list[str]:
        """Run every task that is due and whose lease this process gets; returns their names."""
        ran = []
        for task in self.tasks:
            if self._stop.is_set():
                break
            if self._run_if_due(task):
                ran.append(task.name)
        return ran

    def _run_if_due(self, task: PeriodicTask) -> bool:
        now = time.time()
        ttl = max(60.0, task.interval)
        with self.state.db.begin() as conn:
            if not leases.try_acquire_lease(conn, task.name, self.holder, now, ttl):
                return False
            last = leases.last_run(conn, task.name)
        try:
            if last is not None and now - last < task.interval:
                return False
            try:
                task.run(self.state)
            except Exception:
                log.exception("periodic task %s failed", task.name)
            with self.state.db.begin() as conn:
                leases.mark_run(conn, task.name, time.time())
            return True
        finally:
            with self.state.db.begin() as conn:
                leases.release_lease(conn, task.name, self.holder)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
            except Exception as exc:
                log.warning("scheduler: %s", exc.__class__.__name__)
            self._stop.wait(self.tick)
