"""Group commit: deliveries that arrive together share one durable commit.

Each worker process has one :class:`GroupCommitter` and one writer thread. A
delivery hands its validated activity to :meth:`GroupCommitter.submit` and waits.
The writer takes everything that is waiting (up to ``max_batch``), stores it in
one transaction, in arrival order, with every ingest hook, and commits once. Only
then is each waiting delivery answered. The guarantee is the same as one
transaction per delivery: nothing is acknowledged before its commit, and a
redelivered id is a duplicate whether its first copy was in an earlier
transaction or earlier in the same one.

What it buys: on SQLite every write transaction holds the database's single
write lock (and with ``synchronous=FULL`` an fsync) for its whole length, so
throughput was bounded by one commit per delivery. Batched, the lock, the BEGIN,
the COMMIT and the WAL write are paid once per batch, and the event loop goes on
parsing, authenticating and validating the next requests while the writer
commits. On PostgreSQL a commit waits for the WAL flush; a batch waits once.

Failure isolation: when a batch fails for a reason that belongs to one delivery
(a constraint, a bug in a hook), the batch is rolled back and each delivery is
stored again in its own transaction, so only the failing one gets the error.
When the database itself fails (:class:`sqlalchemy.exc.OperationalError`:
unreachable, locked, disk full), every delivery of the batch gets that error
(the web layer answers 503) without being retried one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from app.ingest import IngestResult, ingest_activity, log_drift_once, store_in_transaction
from app.state import AppState

log = logging.getLogger(__name__)

EXTRAS_KEY = "ninjahook.group_commit"

# Enough to amortize a commit many times over, small enough that one batch holds
# the SQLite write lock for only milliseconds.
DEFAULT_MAX_BATCH = 128


class IngestShuttingDown(RuntimeError):
    """A delivery arrived after its committer was stopped (the web layer answers 503)."""


@dataclass
class _Waiting:
    """One delivery waiting for its commit, and how to wake whoever waits for it."""

    raw: bytes
    payload: dict[str, Any]
    source: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[IngestResult]
    result: IngestResult | None = None
    error: BaseException | None = None
    drift: list[tuple[str, str]] = field(default_factory=list)


class GroupCommitter:
    """Stores submitted activities in shared transactions on one writer thread.

    :param state: the app whose database and ingest hooks are used.
    :param max_batch: most deliveries in one transaction.
    """

    def __init__(self, state: AppState, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.state = state
        self.max_batch = max_batch
        self._queue: deque[_Waiting] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        # Batches committed and deliveries in them, for the tests and the benchmark.
        self.batches = 0
        self.stored = 0

    async def submit(
        self, raw: bytes, payload: dict[str, Any], *, source: str = "webhook"
    ) -> IngestResult:
        """Store one validated activity; returns after the transaction holding it commits.

        :raises sqlalchemy.exc.SQLAlchemyError: the database failed; nothing was stored.
        :raises IngestShuttingDown: the committer was stopped (the server is shutting down).
        """
        loop = asyncio.get_running_loop()
        waiting = _Waiting(raw, payload, source, loop, loop.create_future())
        with self._wake:
            if self._stopping:
                raise IngestShuttingDown("ingest is shutting down; nothing was stored, retry")
            self._ensure_writer()
            self._queue.append(waiting)
            self._wake.notify()
        return await waiting.future

    def stop(self, timeout: float = 30.0) -> None:
        """Store what is queued, then end the writer thread (at shutdown)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)

    def _ensure_writer(self) -> None:
        pid = os.getpid()
        if self._thread is not None and self._pid == pid and self._thread.is_alive():
            return
        if self._pid != pid:
            # A forked child inherits the object but neither the thread nor its waiters.
            self._queue.clear()
            self._pid = pid
        self._thread = threading.Thread(
            target=self._run, name="ninjahook-group-commit", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue:
                    return
            batch: list[_Waiting] = []
            try:
                # The lock first, then the batch: on SQLite, whatever arrives while
                # another worker holds the write lock joins this batch.
                with self.state.db.writing():
                    with self._wake:
                        count = min(len(self._queue), self.max_batch)
                        batch = [self._queue.popleft() for _ in range(count)]
                    self._store(batch)
            except BaseException as exc:
                # Also a failed fsync after the commit (FULL): not known to be durable,
                # so not acknowledged; a retry is answered as a duplicate.
                if not isinstance(exc, sa.exc.OperationalError):
                    log.exception("group commit: unexpected failure")
                for waiting in batch:
                    waiting.result, waiting.error = None, waiting.error or exc
            _answer(batch)

    def _store(self, batch: list[_Waiting]) -> None:
        now = time.time()
        try:
            with self.state.db.begin() as conn:
                for waiting in batch:
                    waiting.result, waiting.drift = store_in_transaction(
                        self.state, conn, waiting.raw, waiting.payload, waiting.source, now
                    )
        except sa.exc.OperationalError as exc:
            # The database itself failed: the same for every delivery of the batch.
            for waiting in batch:
                waiting.result, waiting.error = None, exc
            return
        except Exception as exc:
            if len(batch) == 1:
                batch[0].result, batch[0].error = None, exc
                return
            log.warning(
                "group commit: a batch of %d failed (%s); storing each alone",
                len(batch),
                exc.__class__.__name__,
            )
            for waiting in batch:
                try:
                    waiting.result = ingest_activity(
                        self.state, waiting.raw, waiting.payload, source=waiting.source
                    )
                    waiting.error = None
                except Exception as single_exc:
                    waiting.result, waiting.error = None, single_exc
            return
        self.batches += 1
        self.stored += len(batch)
        for waiting in batch:
            if waiting.result is not None and not waiting.result.duplicate and waiting.drift:
                log_drift_once(self.state, waiting.drift)


def _answer(batch: Iterable[_Waiting]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Waiting]] = {}
    for waiting in batch:
        by_loop.setdefault(waiting.loop, []).append(waiting)
    for loop, waiters in by_loop.items():
        # One wake-up of each event loop per batch, not one per delivery. A closed loop
        # raises RuntimeError: nobody is waiting there any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, waiters)


def _settle(waiters: list[_Waiting]) -> None:
    for waiting in waiters:
        if waiting.future.done():
            continue  # the request was cancelled (client gone); its commit stands
        if waiting.error is not None:
            waiting.future.set_exception(waiting.error)
        else:
            assert waiting.result is not None
            waiting.future.set_result(waiting.result)


def committer_for(state: AppState) -> GroupCommitter:
    """The app's group committer, created on first use."""
    committer = state.extras.get(EXTRAS_KEY)
    if committer is None:
        with state.drift_lock:
            committer = state.extras.get(EXTRAS_KEY)
            if committer is None:
                committer = GroupCommitter(state, max_batch=state.config.ingest_max_batch)
                state.extras[EXTRAS_KEY] = committer
    assert isinstance(committer, GroupCommitter)
    return committer


def stop_committer(state: AppState) -> None:
    """Drain and stop the app's group committer, if it was ever used."""
    committer = state.extras.pop(EXTRAS_KEY, None)
    if isinstance(committer, GroupCommitter):
        committer.stop()
