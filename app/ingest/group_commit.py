"""Group commit: deliveries that arrive together share one durable commit.

Each worker process has one :class:`GroupCommitter`. A delivery hands its
validated activity to :meth:`GroupCommitter.submit` and waits. The committer
takes everything that is waiting (up to ``max_batch``), stores it in one
transaction, in arrival order, with every ingest hook, and commits once. Only
then is each waiting delivery answered. The guarantee is the same as one
transaction per delivery: nothing is acknowledged before its commit, and a
redelivered id is a duplicate whether its first copy was in an earlier
transaction or earlier in the same one.

What it buys: on SQLite every write transaction holds the database's single
write lock (and with ``synchronous=FULL`` an fsync) for its whole length, so
throughput was bounded by one commit per delivery. Batched, the lock, the BEGIN,
the COMMIT and the WAL write are paid once per batch. On PostgreSQL a commit waits
for the WAL flush; a batch waits once.

Where the batch runs:

* SQLite with the writer lock (the default): on the worker's event loop, when the
  lock is free. A callback scheduled by the first waiting delivery runs after the
  loop has read, authenticated and validated every request that had arrived, so
  they all join the batch. If another worker holds the lock, a thread waits for it
  to be free while the loop goes on serving, and then the loop tries again. A
  writer thread would hold SQLite's lock while waiting for the GIL, which the busy
  event loop of its own process holds: measured, that doubled the time the lock
  was held per delivery. With ``FULL``, the WAL fsync runs in a thread, after the
  lock is released, and the batch is answered when it ends. The cost: the loop
  serves nothing else while a batch is stored (about 0.15 ms per delivery, at most
  ``max_batch`` deliveries).
* PostgreSQL (and SQLite without the writer lock): one writer thread per worker,
  which waits for the database (a commit's WAL flush, a row lock) without holding
  up the event loop; whatever arrives meanwhile is the next batch. The loop wakes
  the writer once it has run what was ready, so requests that arrived together
  share a batch. On PostgreSQL the batch runs in psycopg's pipeline mode
  (:func:`app.storage.prepared.pipelined`) with its activity INSERTs taken for new
  (:func:`app.storage.activities.speculative_inserts`), and the stages prepare the
  whole batch first (:meth:`app.ingest.pipeline.Pipeline.prepared`: one statement
  locks every alert the batch moves): it waits for the server once for those
  locks, not once per delivery or per statement. Every INSERT's answer is checked
  before the COMMIT; a redelivered id taken for new rolls the batch back and runs
  it again, waiting for that id's answer. The writer keeps its connection while
  batches follow each other.

Failure isolation: when a batch fails for a reason that belongs to one delivery
(a constraint, a bug in a hook), the batch is rolled back and each delivery is
stored again in its own transaction, so only the failing one gets the error.
When the database itself fails (:func:`app.ingest.errors.database_unavailable`:
unreachable, locked, disk full, a failed fsync), every delivery of the batch gets
that error (the web layer answers 503) without being retried one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from app import tracing
from app.ingest.errors import database_unavailable, transaction_conflict
from app.ingest.service import (
    IngestResult,
    ingest_activity,
    log_drift_once,
    storable,
    store_in_transaction,
)
from app.state import AppState
from app.storage.activities import Misspeculated, speculative_inserts
from app.storage.db import WriterLock
from app.storage.prepared import pipelined, pipelining_supported

log = logging.getLogger(__name__)


# Enough to amortize a commit many times over, small enough that one batch holds
# the SQLite write lock for only milliseconds.
DEFAULT_MAX_BATCH = 128

# Times a batch is run again after PostgreSQL broke a deadlock by rolling it back.
MAX_CONFLICT_RETRIES = 3

# How long the writer thread keeps its PostgreSQL connection between batches.
HOLD_SECONDS = 1.0


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
    # The request's trace context, when tracing is on: the batch span's parent or link.
    trace_context: Any = None


class GroupCommitter:
    """Stores submitted activities in shared transactions (see the module's text).

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
        # SQLite with the writer lock: batches run on the event loop.
        self._on_loop = state.db.writer_lock is not None
        # PostgreSQL (psycopg): a batch's statements go out in pipeline mode, on a
        # connection the writer thread keeps while batches follow each other.
        self._pipelined = not self._on_loop and pipelining_supported(state.db.engine)
        self._held: sa.Connection | None = None
        self._held_since = 0.0
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        # Writer thread: the loop that will wake it (see submit).
        self._wake_loop: asyncio.AbstractEventLoop | None = None
        self._waiter: queue.SimpleQueue[tuple[WriterLock, asyncio.AbstractEventLoop]] | None = None
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
        waiting = _Waiting(
            raw,
            payload,
            source,
            loop,
            loop.create_future(),
            trace_context=tracing.current_context(),
        )
        schedule = wake = False
        with self._wake:
            if self._stopping:
                raise IngestShuttingDown("ingest is shutting down; nothing was stored, retry")
            self._forget_parent()
            self._queue.append(waiting)
            if not self._on_loop:
                self._ensure_writer()
                # The writer is woken once this loop has run what is ready (the other
                # requests that arrived with this one reach submit first), so that they
                # share the batch: woken at once, it would take this delivery alone
                # and the others would wait for that batch to commit before theirs.
                if self._wake_loop is None or self._wake_loop.is_closed():
                    self._wake_loop = loop
                    wake = True
                elif self._wake_loop is not loop:
                    self._wake.notify()  # another loop's wake-up is pending: no waiting on it
            elif self._flush_loop is None or self._flush_loop.is_closed():
                # No flush is pending on a live loop: this loop flushes.
                self._flush_loop = loop
                schedule = True
        if schedule:
            loop.call_soon(self._flush_on_loop, loop)
        if wake:
            loop.call_soon(self._wake_writer, loop)
        return await waiting.future

    def _wake_writer(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._wake:
            if self._wake_loop is loop:
                self._wake_loop = None
            self._wake.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Store what is queued, then end the writer thread (at shutdown)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
            thread = self._thread
            leftover = list(self._queue) if self._on_loop else []
            if leftover:
                self._queue.clear()
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        if leftover:
            self._commit(leftover)
            _answer(leftover)

    def _flush_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        lock = self.state.db.writer_lock
        assert lock is not None
        try:
            acquired = lock.try_acquire()
        except OSError as exc:  # the lock file cannot be opened: nothing can be stored
            with self._wake:
                stranded = list(self._queue)
                self._queue.clear()
                self._flush_loop = None
            _fail(stranded, sa.exc.OperationalError("SQLite writer lock", None, exc))
            _answer(stranded, loop)
            return
        if not acquired:
            # Another worker (or a background task of this one) is writing: a thread
            # waits for the lock to be free, and meanwhile this loop goes on serving.
            self._wait_for_lock(lock, loop)
            return
        batch: list[_Waiting] = []
        more = False
        try:
            with self._wake:
                count = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
                more = bool(self._queue)
                self._flush_loop = loop if more else None
            if batch:
                self._store(batch)
        except BaseException as exc:
            _fail(batch, exc)
        finally:
            lock.release()
        if more:
            loop.call_soon(self._flush_on_loop, loop)
        if not batch:
            return
        if self.state.db.syncs_wal:
            # The fsync (FULL) outside the lock and off the loop; answered after it.
            loop.run_in_executor(None, self._sync_then_answer, batch)
        else:
            _answer(batch, loop)

    def _wait_for_lock(self, lock: WriterLock, loop: asyncio.AbstractEventLoop) -> None:
        # One daemon thread per process (a forked child starts its own: _forget_parent):
        # it may be blocked in flock when the process exits, which must not wait for it.
        if self._waiter is None:
            self._waiter = queue.SimpleQueue()
            threading.Thread(
                target=self._wake_when_free,
                args=(self._waiter,),
                name="ninjahook-lock-wait",
                daemon=True,
            ).start()
        self._waiter.put((lock, loop))

    def _wake_when_free(
        self, requests: queue.SimpleQueue[tuple[WriterLock, asyncio.AbstractEventLoop]]
    ) -> None:
        while True:
            lock, loop = requests.get()
            # An OSError here: the flush itself meets it and fails the batch.
            with contextlib.suppress(OSError):
                lock.wait_until_free()
            # A closed loop raises RuntimeError: nobody waits there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._flush_on_loop, loop)

    def _sync_then_answer(self, batch: list[_Waiting]) -> None:
        try:
            self.state.db.sync_wal()
        except BaseException as exc:
            _fail(batch, exc)
        _answer(batch)

    def _forget_parent(self) -> None:
        pid = os.getpid()
        if self._pid != pid:
            # A forked child inherits the object but neither the thread nor its waiters.
            self._queue.clear()
            self._thread = None
            self._waiter = None
            self._held = None  # the parent's connection: not ours to use or close
            self._flush_loop = None
            self._wake_loop = None
            self._pid = pid

    def _ensure_writer(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(
            target=self._run, name="ninjahook-group-commit", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    if self._held is not None and not self._wake.wait(HOLD_SECONDS):
                        self._release()  # idle: the connection goes back to the pool
                    elif self._held is None:
                        self._wake.wait()
                if not self._queue:
                    self._release()
                    return
            with self._wake:
                count = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
            self._commit(batch)
            _answer(batch)

    def _commit(self, batch: list[_Waiting]) -> None:
        """Store ``batch`` and make it durable, leaving a result or an error on each."""
        try:
            with self.state.db.writing():
                self._store(batch)
        except BaseException as exc:
            _fail(batch, exc)

    def _store(self, batch: list[_Waiting]) -> None:
        if not tracing.active():
            self._store_batch(batch)
            return
        # One span per batch: a child of its first delivery's request, linked to the others'.
        with tracing.span(
            "ninjahook.group_commit",
            {
                "ninjahook.batch.size": len(batch),
                "db.system.name": self.state.db.engine.dialect.name,
                "ninjahook.batch.pipelined": self._pipelined,
            },
            parent=batch[0].trace_context,
            links_from=(waiting.trace_context for waiting in batch[1:]),
        ):
            self._store_batch(batch)

    def _store_batch(self, batch: list[_Waiting]) -> None:
        now = time.time()
        # PostgreSQL: ids that occur twice in the batch are inserted the usual way.
        check = _repeated_ids(batch) if self._pipelined else frozenset()
        conflicts = 0
        try:
            while True:
                try:
                    self._store_once(batch, now, check)
                    break
                except Misspeculated as exc:
                    # A redelivery was taken for new: the transaction was rolled back;
                    # run the batch again, waiting for the answer on those ids.
                    check = check | exc.ids
                except sa.exc.DBAPIError as exc:
                    # A deadlock with another batch storing the same id (alert locks
                    # taken for a whole batch, an id's own alert after its insert):
                    # PostgreSQL rolled this one back, so running it again is safe.
                    if not transaction_conflict(exc) or conflicts >= MAX_CONFLICT_RETRIES:
                        raise
                    conflicts += 1
                    log.info("group commit: %s; running the batch again", exc.orig)
        except Exception as exc:
            if database_unavailable(exc):
                # The database itself failed: the same for every delivery of the batch.
                for waiting in batch:
                    waiting.result, waiting.error = None, exc
                return
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

    def _store_once(self, batch: list[_Waiting], now: float, check: frozenset[int]) -> None:
        if not self._pipelined:
            with self.state.db.begin() as conn:
                for waiting in batch:
                    waiting.result, waiting.drift = store_in_transaction(
                        self.state, conn, waiting.raw, waiting.payload, waiting.source, now
                    )
            return
        made = [storable(w.payload, w.raw, w.source, now) for w in batch]
        # What the stages may prepare for the whole batch (lock its alerts in one
        # statement): the rows taken for new. An id in ``check`` may be stored already,
        # and its delivery then runs no stage; were it taken for new wrongly, the
        # transaction is rolled back (Misspeculated) and nothing prepared stays.
        new_rows = [row for _payload, row in made if row["id"] not in check]
        # The pipeline ends (every answer in) before the speculation is checked, and
        # both before the commit.
        with (
            self.state.db.writing(),
            self._connection() as conn,
            conn.begin(),
            speculative_inserts(conn, check),
            pipelined(conn),
            self.state.pipeline.prepared(conn, new_rows),
        ):
            for waiting, stored in zip(batch, made, strict=True):
                waiting.result, waiting.drift = store_in_transaction(
                    self.state, conn, waiting.raw, waiting.payload, waiting.source, now, stored
                )

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
        """A connection for one batch. The writer thread keeps its connection from one
        batch to the next while they follow each other closely: checked out again, the
        pool would ping the server first, one more round trip per batch. A connection
        that failed, or that has been idle for ``HOLD_SECONDS``, goes back to the pool
        (and is pinged when next checked out)."""
        if threading.current_thread() is not self._thread:
            with self.state.db.engine.connect() as conn:
                yield conn
            return
        held, self._held = self._held, None
        if held is not None and time.monotonic() - self._held_since > HOLD_SECONDS:
            held.close()
            held = None
        conn = held if held is not None else self.state.db.engine.connect()
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        self._held, self._held_since = conn, time.monotonic()

    def _release(self) -> None:
        conn, self._held = self._held, None
        if conn is not None:
            conn.close()


def _repeated_ids(batch: list[_Waiting]) -> frozenset[int]:
    seen: set[int] = set()
    repeated: set[int] = set()
    for waiting in batch:
        activity_id = waiting.payload["id"]
        if activity_id in seen:
            repeated.add(activity_id)
        seen.add(activity_id)
    return frozenset(repeated)


def _fail(batch: list[_Waiting], exc: BaseException) -> None:
    # Also a failed fsync after the commit (FULL): not known to be durable, so not
    # acknowledged; a retry is answered as a duplicate.
    if not isinstance(exc, sa.exc.OperationalError):
        log.error("group commit: unexpected failure", exc_info=exc)
    for waiting in batch:
        waiting.result, waiting.error = None, waiting.error or exc


def _answer(batch: Iterable[_Waiting], current: asyncio.AbstractEventLoop | None = None) -> None:
    """Settle each delivery's future on its own loop (directly on ``current``)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Waiting]] = {}
    for waiting in batch:
        by_loop.setdefault(waiting.loop, []).append(waiting)
    for loop, waiters in by_loop.items():
        if loop is current:
            _settle(waiters)
            continue
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
    committer = state.committer
    if committer is None:
        with state.committer_lock:
            committer = state.committer
            if committer is None:
                committer = GroupCommitter(state, max_batch=state.config.ingest_max_batch)
                state.committer = committer
    return committer


def stop_committer(state: AppState) -> None:
    """Drain and stop the app's group committer, if it was ever used."""
    committer, state.committer = state.committer, None
    if committer is not None:
        committer.stop()
