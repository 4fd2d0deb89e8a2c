"""Sending to a SIEM in order, in batches: the deliveries to one collector that are in
flight at once go out together, sorted by activity, one request at a time.

While a request is in flight, the deliveries that arrive wait and form the next one.
A failed request that is worth retrying is retried in place, holding back the ones
queued behind it, so a short outage (a 503, a 429, a restarting receiver) does not
reorder a device's activities; a longer one ends in the outbox's retries like any
failed delivery.

Each delivery spends at most half its timeout waiting for its turn or being retried
in place, then one more request: the worker's lease (at least the timeout plus two
seconds, NINJAHOOK_DELIVERY_LEASE) must outlast it, or a second worker would send it
again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.notifications.destinations import Outcome

# A new leader waits for the deliveries claimed with its own to join it: until none
# joined for LINGER seconds, at most MAX_LINGER.
LINGER = 0.05
MAX_LINGER = 0.5
# First pause between in-place retries (doubled each time, at least Retry-After).
RETRY_PAUSE = 0.25


@dataclass
class _Waiting:
    item: Any
    order: tuple[float, int]
    # time.monotonic() by which it must be on its way (half its timeout from now).
    due: float
    done: bool = False
    outcome: Outcome | None = None


@dataclass
class _Stream:
    cond: threading.Condition = field(default_factory=threading.Condition)
    queue: list[_Waiting] = field(default_factory=list)
    sending: bool = False


_STREAMS: dict[tuple[str, ...], _Stream] = {}
_STREAMS_LOCK = threading.Lock()


def _stream(key: tuple[str, ...]) -> _Stream:
    with _STREAMS_LOCK:
        return _STREAMS.setdefault(key, _Stream())


def activity_order(activity: dict[str, Any]) -> tuple[float, int]:
    """Sort key of an activity: its activityTime, then its id."""
    when, ident = activity.get("activityTime"), activity.get("id")
    return (
        float(when) if isinstance(when, int | float) and not isinstance(when, bool) else 0.0,
        ident if isinstance(ident, int) and not isinstance(ident, bool) else 0,
    )


def send_in_order(
    key: tuple[str, ...],
    item: Any,
    order: tuple[float, int],
    send_batch: Callable[[list[Any]], Outcome],
    *,
    batch_size: int,
    timeout: float,
) -> Outcome:
    """Send ``item`` with whatever else waits for the stream ``key``; returns the outcome
    of the request that carried it."""
    stream = _stream(key)
    me = _Waiting(item, order, due=time.monotonic() + timeout / 2)
    with stream.cond:
        stream.queue.append(me)
    while True:
        with stream.cond:
            while stream.sending and not me.done:
                left = me.due - time.monotonic()
                if left <= 0 and me in stream.queue:
                    # Still not taken: give the turn up; the outbox retries it later.
                    stream.queue.remove(me)
                    return Outcome(ok=False, error="queued too long behind earlier deliveries")
                stream.cond.wait(max(left, 0.05))
            if me.done:
                assert me.outcome is not None
                return me.outcome
            stream.sending = True
        batch: list[_Waiting] = []
        outcome = Outcome(ok=False, error="internal error: the batch was not sent")
        try:
            _linger(stream, batch_size)
            with stream.cond:
                stream.queue.sort(key=lambda w: w.order)
                batch = stream.queue[:batch_size]
                del stream.queue[:batch_size]
            if batch:
                due = min(w.due for w in batch)
                outcome = _with_retries([w.item for w in batch], send_batch, due)
        finally:
            with stream.cond:
                for waiting in batch:
                    waiting.outcome, waiting.done = outcome, True
                stream.sending = False
                stream.cond.notify_all()


def _linger(stream: _Stream, batch_size: int) -> None:
    deadline = time.monotonic() + MAX_LINGER
    seen = -1
    while time.monotonic() < deadline:
        with stream.cond:
            waiting = len(stream.queue)
        if waiting == seen or waiting >= batch_size:
            return
        seen = waiting
        time.sleep(LINGER)


def _with_retries(
    items: list[Any], send_batch: Callable[[list[Any]], Outcome], due: float
) -> Outcome:
    pause = RETRY_PAUSE
    while True:
        outcome = send_batch(items)
        if outcome.ok or outcome.permanent:
            return outcome
        wait = max(pause, outcome.retry_after or 0.0)
        if time.monotonic() + wait >= due:
            return outcome
        time.sleep(wait)
        pause *= 2
