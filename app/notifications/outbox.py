"""Routed delivery: the ingest hook that fills the outbox, and the worker that empties it.

Enqueueing happens inside the ingest transaction (a transactional outbox), so a
stored activity has its deliveries and a rolled-back one has none. Workers take
deliveries with row locks and a lease: a worker killed mid-delivery leaves its
delivery ``delivering`` with a lease that runs out, and another worker (or the
same one restarted) sends it again under the same id.

On SQLite the server delivers itself, in one process at a time, as a periodic task
(``NINJAHOOK_DELIVERY_WORKER=auto``); beside PostgreSQL run ``ninjahook worker`` on as
many hosts as you like.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

import httpx
import jinja2
from sqlalchemy.engine import Connection, Row

from app.alerts.service import RESET_CODES, alert_key
from app.config import Config, ConfigError
from app.ingest.pipeline import ActivityHook, StoredActivity
from app.notifications.destinations import Envelope, Outcome, send
from app.notifications.matching import describe, matches, matching_routes, template_context
from app.notifications.routes import EMPTY, RoutesConfig, RoutesError, load_routes
from app.notifications.templates import markup_for, render
from app.state import AppState
from app.storage import activities as activity_store
from app.storage import notifications as store

log = logging.getLogger(__name__)

# Longest an in-process delivery round runs before the scheduler's other tasks get a turn.
IN_PROCESS_BUDGET = 20.0


def load_configured_routes(config: Config) -> RoutesConfig:
    """The routes file named by NINJAHOOK_ROUTES, validated (empty when unset).

    :raises ConfigError: naming the file, the line and the cause.
    """
    if not config.routes_file:
        return EMPTY
    try:
        return load_routes(config.routes_file)
    except RoutesError as exc:
        raise ConfigError(f"NINJAHOOK_ROUTES: {exc}") from None


def routes_of(state: AppState) -> RoutesConfig:
    """The routes loaded when the app was built."""
    return state.routes


def enqueue_stage(routes: RoutesConfig) -> ActivityHook:
    """The pipeline stage that puts what ``routes`` say for a new activity in the outbox."""

    def enqueue(conn: Connection, payload: dict[str, Any], stored: StoredActivity) -> None:
        enqueue_for_activity(conn, routes, payload, stored.id, stored.received_at)

    return enqueue


def sends_in_process(state: AppState) -> bool:
    """Whether the server sends notifications itself: on SQLite by default (there is one
    host), or when NINJAHOOK_DELIVERY_WORKER=on; beside PostgreSQL `ninjahook worker` does."""
    mode = state.config.delivery_worker
    return bool(state.routes.routes) and (mode == "on" or (mode == "auto" and state.db.is_sqlite))


def enqueue_for_activity(
    conn: Connection, routes: RoutesConfig, payload: dict[str, Any], activity_id: int, now: float
) -> list[str]:
    """Enqueue what ``routes`` say for a newly stored activity; returns the new uids.

    For a condition, a route with ``once_per_alert`` notifies on the alert's first
    TRIGGERED only; the alert's RESET sends a ``resolved`` follow-up, referring to the
    original notification, to every route that notified it.
    """
    key = alert_key(payload)
    status = payload.get("statusCode")
    is_reset = status in RESET_CODES
    # The entity cache is read only for routes that match on what it holds: at send
    # time the message is worded from a fresh describe() anyway.
    subject = describe(conn if routes.matches_on_entities else None, payload)
    enqueued: list[str] = []

    def add(route_name: str, destination: str, event: str, refers_to: str | None) -> None:
        uid = store.enqueue(
            conn,
            activity_id=activity_id,
            route=route_name,
            destination=destination,
            kind=routes.destinations[destination].kind,
            event=event,
            alert_key=key,
            refers_to=refers_to,
            now=now,
        )
        if uid is not None:
            enqueued.append(uid)

    matched = {r.name for r in matching_routes(routes, subject)}
    raw_time = payload.get("activityTime")
    activity_time = float(raw_time) if isinstance(raw_time, int | float) else None
    for route in routes.routes:
        alert_aware = key is not None and route.once_per_alert
        if key is not None and is_reset and alert_aware:
            # Remember a RESET that arrives before its TRIGGERED, for the routes that
            # would take this alert's activities whatever their statusCode.
            remember = matches(replace(route.match, status_codes=None), subject)
            opened_by = store.resolve_route_notice(
                conn, route.name, key, activity_id, activity_time, now, remember=remember
            )
            if opened_by is None or not route.send_resolved:
                continue
            for destination in route.destinations:
                original = store.notification_uid(conn, opened_by, route.name, destination)
                add(route.name, destination, "resolved", original)
            continue
        if route.name not in matched:
            continue
        if (
            key is not None
            and alert_aware
            and not store.open_route_notice(conn, route.name, key, activity_id, activity_time, now)
        ):
            continue  # a repeat of an alert this route has notified already
        for destination in route.destinations:
            add(route.name, destination, "notify", None)
    return enqueued


class _RedactSecrets(logging.Filter):
    """Hides destination URLs and secrets in library log records (httpx logs every
    request's URL at INFO, and a Slack, Teams or apprise URL is a credential)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = message
        for secret in self.secrets:
            hidden = hidden.replace(secret, "<redacted>")
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


_REDACT = _RedactSecrets()
for _name in ("httpx", "httpcore", "apprise"):
    logging.getLogger(_name).addFilter(_REDACT)


def _register_secrets(routes: RoutesConfig) -> None:
    for destination in routes.destinations.values():
        for secret in (
            destination.url_secret,
            destination.signing_secret,
            destination.smtp_password,
        ):
            if secret is not None:
                _REDACT.secrets.add(secret.value)


def retry_delay(attempts: int, base: float, ceiling: float, retry_after: float | None) -> float:
    """Seconds before the next attempt: exponential backoff with jitter, never less than
    a destination's Retry-After.

    The jitter (50 to 100 % of the step) keeps many deliveries that failed together
    from retrying together.
    """
    step = min(base * (2 ** max(attempts - 1, 0)), ceiling)
    delay = step * random.uniform(0.5, 1.0)
    return float(max(delay, retry_after)) if retry_after is not None else float(delay)


class Worker:
    """Takes due deliveries from the outbox and sends them, ``concurrency`` at a time.

    :param holder: the name leases are taken under (host, pid and a random part).
    """

    def __init__(self, state: AppState, routes: RoutesConfig | None = None) -> None:
        self.state = state
        self.routes = routes if routes is not None else routes_of(state)
        _register_secrets(self.routes)
        cfg = state.config
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.concurrency = int(cfg.delivery_concurrency)
        self.timeout = float(cfg.delivery_timeout)
        # The lease must outlast the slowest attempt, or a second worker would resend
        # a delivery that is still in flight.
        slowest = max(
            [self.timeout] + [d.timeout for d in self.routes.destinations.values() if d.timeout]
        )
        self.lease = max(float(cfg.delivery_lease), slowest + 2.0)
        self.max_attempts = int(cfg.delivery_max_attempts)
        self.backoff = float(cfg.delivery_backoff)
        self.backoff_max = float(cfg.delivery_backoff_max)
        self.poll_interval = float(cfg.delivery_poll_interval)
        self.http = httpx.Client(follow_redirects=False)
        self.stop_event = threading.Event()
        self.sent = 0
        self.failed = 0

    def close(self) -> None:
        """Release the HTTP connections."""
        self.http.close()

    def claim(self, limit: int) -> list[Row[Any]]:
        """Take up to ``limit`` due deliveries."""
        with self.state.db.begin() as conn:
            return store.claim(
                conn, now=time.time(), lease=self.lease, holder=self.holder, limit=limit
            )

    def run(self, *, drain: bool = False, deadline: float | None = None) -> None:
        """Deliver until :meth:`stop`; with ``drain``, until nothing is due or in flight;
        with ``deadline`` (a :func:`time.monotonic` value), take nothing new after it."""
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="ninjahook-delivery")
        inflight: set[Future[None]] = set()
        try:
            while not self.stop_event.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    return
                taken = (
                    self.claim(self.concurrency - len(inflight))
                    if len(inflight) < self.concurrency
                    else []
                )
                inflight.update(pool.submit(self.deliver, row) for row in taken)
                if drain and not taken and not inflight:
                    return
                if taken and len(inflight) < self.concurrency:
                    continue
                if inflight:
                    _done, inflight = wait(
                        inflight, timeout=self.poll_interval, return_when=FIRST_COMPLETED
                    )
                    inflight = set(inflight)
                else:
                    self.stop_event.wait(self.poll_interval)
        finally:
            pool.shutdown(wait=True)

    def stop(self) -> None:
        """Finish the deliveries in flight, then return from :meth:`run`."""
        self.stop_event.set()

    def deliver(self, row: Row[Any]) -> None:
        """Make one attempt at a claimed delivery and record its outcome."""
        try:
            outcome = self._attempt(row)
        except Exception as exc:  # a bug must not kill the worker; the lease covers us
            log.exception("delivery %s: unexpected error", row.uid)
            outcome = Outcome(ok=False, error=f"internal error: {exc.__class__.__name__}")
        self._record(row, outcome)

    def _attempt(self, row: Row[Any]) -> Outcome:
        route = self.routes.route(row.route)
        destination = self.routes.destinations.get(row.destination)
        if route is None or destination is None or row.destination not in route.destinations:
            return Outcome(
                ok=False,
                permanent=True,
                error=f"route {row.route!r} → {row.destination!r} is no longer in the routes file",
            )
        with self.state.db.connect() as conn:
            raw = activity_store.get_activity_raw(conn, row.activity_id)
            if raw is None:
                return Outcome(
                    ok=False,
                    permanent=True,
                    error=f"activity {row.activity_id} is no longer stored",
                )
            subject = describe(conn, json.loads(raw))
        context = template_context(
            subject,
            route=row.route,
            event=row.event,
            alert_key=row.alert_key,
            delivery_id=row.uid,
            refers_to=row.refers_to,
        )
        try:
            message = render(
                context, route.title, route.template, markup=markup_for(destination.kind)
            )
        except jinja2.TemplateError as exc:
            return Outcome(ok=False, permanent=True, error=f"template error: {exc}")
        return send(
            destination,
            message,
            Envelope(delivery_id=row.uid, refers_to=row.refers_to),
            route=row.route,
            timeout=self.timeout,
            client=self.http,
        )

    def _record(self, row: Row[Any], outcome: Outcome) -> None:
        now = time.time()
        with self.state.db.begin() as conn:
            if outcome.ok:
                kept = store.mark_delivered(conn, row.id, self.holder, now, outcome.status_code)
                self.sent += 1
                log.info("delivery %s (%s → %s) delivered", row.uid, row.route, row.destination)
            else:
                self.failed += 1
                final = outcome.permanent or row.attempts >= self.max_attempts
                retry_at = None
                if not final:
                    retry_at = now + retry_delay(
                        row.attempts, self.backoff, self.backoff_max, outcome.retry_after
                    )
                kept = store.mark_failed(
                    conn,
                    row.id,
                    self.holder,
                    now,
                    error=outcome.error or "failed",
                    status_code=outcome.status_code,
                    retry_at=retry_at,
                )
                log.warning(
                    "delivery %s (%s → %s) attempt %d failed: %s; %s",
                    row.uid,
                    row.route,
                    row.destination,
                    row.attempts,
                    outcome.error,
                    "dead letter"
                    if final
                    else f"retry in {retry_at - now:.1f}s"
                    if retry_at
                    else "",
                )
        if not kept:
            log.warning("delivery %s: lease lost to another worker; outcome not recorded", row.uid)


def send_due(state: AppState) -> None:
    """The in-process worker (a periodic task): send what is due, for a bounded time.

    The scheduler runs it in one server process at a time and waits for it on
    shutdown, so it stops with the server and never outlives it.
    """
    worker = Worker(state)
    try:
        worker.run(drain=True, deadline=time.monotonic() + IN_PROCESS_BUDGET)
    finally:
        worker.close()
