"""Real-server harness for the reliability, hostile-input and authentication tests.

A :class:`Sender` plays NinjaOne: worker threads post deliveries with unique ids to
a real server on 127.0.0.1 and log every id the server acknowledged with a 2xx.
:func:`lost_ids` then compares that log with the database: an acknowledged id
missing from the database is a broken promise.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.storage import activities as store
from app.storage.db import Database
from tests.support import (
    INGEST_PATH,
    WEBHOOK_HEADERS,
    GunicornServer,
    body,
    condition_activity,
)
from tests.support import server_env as server_env  # the scenarios import it from here


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns the last result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def kill_master(server: GunicornServer, orphan_grace: float = 10) -> list[int]:
    """kill -9 the gunicorn master, then wait for its orphaned workers to go.

    Orphaned uvicorn workers notice the dead parent and exit on their own; any
    still alive after ``orphan_grace`` seconds are killed too, so the port is free
    for a restart. Returns the workers' pids.
    """
    workers = server.worker_pids()
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    if not wait_for(lambda: not any(pid_alive(p) for p in workers), orphan_grace):
        for pid in workers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(pid_alive(p) for p in workers), 10)
    return workers


def wait_for_workers(server: GunicornServer, count: int, timeout: float = 30) -> list[int]:
    """The worker pids once ``count`` workers run and the server answers /readyz."""

    def ready() -> bool:
        if len(server.worker_pids()) != count:
            return False
        try:
            return httpx.get(server.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_for(ready, timeout, 0.1):
        raise RuntimeError(f"gunicorn did not get back to {count} ready workers")
    return server.worker_pids()


@dataclass
class SendLog:
    """What a sender saw: the acknowledged ids and every other outcome, counted."""

    sent: int = 0
    acknowledged: set[int] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    # Transport failures by exception name: refused connections while a server is
    # down, resets when a process is killed mid-request. Never an acknowledgement.
    transport_errors: Counter[str] = field(default_factory=Counter)
    # (time, status) of every answer, to find when an outage started and ended.
    timeline: list[tuple[float, int]] = field(default_factory=list)

    def count(self, predicate: Callable[[int], bool]) -> int:
        """How many answers had a status matching ``predicate``."""
        return sum(n for status, n in self.statuses.items() if predicate(status))


class Sender:
    """Posts deliveries with unique ids from ``connections`` threads until stopped.

    Every 2xx is logged as acknowledged before the next request, like a sender
    that marks an event delivered once the receiver answered 2xx. The number of
    requests is bounded by ``max_requests``; the target is always ``url`` on
    127.0.0.1.
    """

    def __init__(
        self,
        url: str,
        *,
        connections: int = 8,
        first_id: int = 1,
        max_requests: int = 200_000,
        timeout: float = 30,
    ) -> None:
        self.url = url
        self.connections = connections
        self.max_requests = max_requests
        self.timeout = timeout
        self.log = SendLog()
        self._ids = itertools.count(first_id)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _next_id(self) -> int | None:
        with self._lock:
            if self.log.sent >= self.max_requests or self._stop.is_set():
                return None
            self.log.sent += 1
            return next(self._ids)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while (activity_id := self._next_id()) is not None:
                try:
                    r = client.post(
                        self.url + INGEST_PATH,
                        content=body(condition_activity(activity_id)),
                        headers=WEBHOOK_HEADERS,
                    )
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.log.transport_errors[type(exc).__name__] += 1
                    # A dead server refuses at once; do not spin on it.
                    time.sleep(0.02)
                    continue
                with self._lock:
                    self.log.statuses[r.status_code] += 1
                    self.log.timeline.append((time.monotonic(), r.status_code))
                    if 200 <= r.status_code < 300:
                        self.log.acknowledged.add(activity_id)

    def start(self) -> Sender:
        for _ in range(self.connections):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> SendLog:
        """Stop sending, wait for the requests in flight, return the log."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 10)
        return self.log

    def acknowledged_count(self) -> int:
        with self._lock:
            return len(self.log.acknowledged)

    def wait_for_more_acknowledgements(self, count: int, timeout: float = 30) -> None:
        """Block until ``count`` more ids than now are acknowledged (the server serves)."""
        target = self.acknowledged_count() + count
        if not wait_for(lambda: self.acknowledged_count() >= target, timeout):
            raise AssertionError(f"fewer than {count} acknowledgements in {timeout} s")

    def statuses_since(self, since: float) -> Counter[int]:
        """Statuses answered after ``since`` (a time.monotonic() value)."""
        with self._lock:
            return Counter(status for t, status in self.log.timeline if t >= since)


def lost_ids(database_url: str, acknowledged: Iterable[int]) -> set[int]:
    """The acknowledged ids that the database does not hold."""
    wanted = sorted(acknowledged)
    db = Database(database_url)
    try:
        found: set[int] = set()
        with db.connect() as conn:
            for start in range(0, len(wanted), 500):
                found |= store.existing_activity_ids(conn, wanted[start : start + 500])
    finally:
        db.dispose()
    return set(wanted) - found


def stored_counts(database_url: str) -> tuple[int, int]:
    """(activities, rejected deliveries) in the database."""
    db = Database(database_url)
    try:
        with db.connect() as conn:
            return store.count_activities(conn), store.count_rejected(conn)
    finally:
        db.dispose()
