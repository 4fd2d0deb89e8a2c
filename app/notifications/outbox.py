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
import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

import httpx
import jinja2
from sqlalchemy.engine import Connection, Row

from app.alerts.service import ACKNOWLEDGED, RESET_CODES, alert_key
from app.config import Config, ConfigError
from app.ingest.pipeline import ActivityHook, StoredActivity
from app.notifications import flapping
from app.notifications.destinations import Envelope, Outcome, send
from app.notifications.links import mail_domain, message_links
from app.notifications.matching import (
    Subject,
    describe,
    matches,
    matching_routes,
    template_context,
)
from app.notifications.routes import (
    EMPTY,
    Destination,
    Route,
    RoutesConfig,
    RoutesError,
    load_routes,
)
from app.notifications.templates import Message, markup_for, render, render_group
from app.notifications.vendors import send as send_to_vendor
from app.notifications.vendors.lifecycle import ACKNOWLEDGING_KINDS, acknowledge_skip
from app.state import AppState
from app.storage import activities as activity_store
from app.storage import notifications as store
from app.storage.silences import Suppression

log = logging.getLogger(__name__)

# What holds back a route's notification of an activity (app.silences.service.Suppressor:
# silences and maintenance windows), called in the ingest transaction.
Suppress = Callable[[Connection, Subject, Route, float], Suppression | None]

# Longest an in-process delivery round runs before the scheduler's other tasks get a turn.
IN_PROCESS_BUDGET = 20.0


def load_configured_routes(config: Config) -> RoutesConfig:
    """The routes file named by NINJAHOOK_ROUTES, validated (empty when unset).

    :raises ConfigError: naming the file, the line and the cause.
    """
    if not config.routes_file:
        return EMPTY
    try:
        routes = load_routes(config.routes_file)
    except RoutesError as exc:
        raise ConfigError(f"NINJAHOOK_ROUTES: {exc}") from None
    for warning in routes.warnings:
        log.warning("NINJAHOOK_ROUTES: %s", warning)
    return routes


def routes_of(state: AppState) -> RoutesConfig:
    """The routes loaded when the app was built."""
    return state.routes


def enqueue_stage(routes: RoutesConfig, suppress: Suppress | None = None) -> ActivityHook:
    """The pipeline stage that puts what ``routes`` say for a new activity in the outbox."""

    def enqueue(conn: Connection, payload: dict[str, Any], stored: StoredActivity) -> None:
        enqueue_for_activity(
            conn, routes, payload, stored.id, stored.received_at, suppress=suppress
        )

    return enqueue


def sends_in_process(state: AppState) -> bool:
    """Whether the server sends notifications itself: on SQLite by default (there is one
    host), or when NINJAHOOK_DELIVERY_WORKER=on; beside PostgreSQL `ninjahook worker` does."""
    mode = state.config.delivery_worker
    return bool(state.routes.routes) and (mode == "on" or (mode == "auto" and state.db.is_sqlite))


def enqueue_for_activity(
    conn: Connection,
    routes: RoutesConfig,
    payload: dict[str, Any],
    activity_id: int,
    now: float,
    *,
    suppress: Suppress | None = None,
) -> list[str]:
    """Enqueue what ``routes`` say for a newly stored activity; returns the new uids.

    For a condition, a route with ``once_per_alert`` notifies on the alert's first
    TRIGGERED only; the alert's RESET sends a ``resolved`` follow-up, referring to the
    original notification, to every route that notified it.

    What ``suppress`` holds back (a silence, a maintenance window) is recorded as
    ``suppressed`` with the reason and never sent; a suppressed TRIGGERED does not open
    the route's alert, so the alert notifies once the suppression is over.
    """
    key = alert_key(payload)
    status = payload.get("statusCode")
    is_reset = status in RESET_CODES
    # The entity cache is read only for routes that match on what it holds: at send
    # time the message is worded from a fresh describe() anyway.
    subject = describe(conn if routes.matches_on_entities else None, payload)
    enqueued: list[str] = []

    def add(
        route_name: str,
        destination: str,
        event: str,
        refers_to: str | None,
        suppressed: Suppression | None = None,
        due_at: float | None = None,
        group_key: str | None = None,
    ) -> None:
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
            suppressed_reason=suppressed.reason if suppressed else None,
            silence_id=suppressed.silence_id if suppressed else None,
            due_at=due_at,
            group_key=group_key,
        )
        if uid is not None and suppressed is None:
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
            # Never suppressed: this route's notification of the alert went out (or is
            # on its way), and a silence or maintenance window must not leave it open
            # at the destination.
            for destination in route.destinations:
                original = store.notification_uid(conn, opened_by, route.name, destination)
                add(route.name, destination, "resolved", original)
            continue
        if key is not None and alert_aware and status == ACKNOWLEDGED:
            # Acknowledge the incident at the destinations that keep one
            # (app.notifications.vendors.lifecycle) while the route's notice is open.
            notice = store.route_notice(conn, route.name, key)
            if (
                notice is not None
                and notice.state == "open"
                and matches(replace(route.match, status_codes=None), subject)
            ):
                suppressed = suppress(conn, subject, route, now) if suppress else None
                for destination in route.destinations:
                    if routes.destinations[destination].kind not in ACKNOWLEDGING_KINDS:
                        continue
                    original = store.notification_uid(
                        conn, notice.opened_activity_id, route.name, destination
                    )
                    add(route.name, destination, "acknowledge", original, suppressed)
        if route.name not in matched:
            continue
        suppressed = suppress(conn, subject, route, now) if suppress else None
        if suppressed is not None:
            for destination in route.destinations:
                add(route.name, destination, "notify", None, suppressed)
            continue
        if (
            key is not None
            and alert_aware
            and not store.open_route_notice(conn, route.name, key, activity_id, activity_time, now)
        ):
            continue  # a repeat of an alert this route has notified already
        # A route's wait only delays the row: whether the alert is still open is decided
        # when a worker claims it (lifecycle_verdict), outside the ingest transaction.
        # A grouped notification also waits group_wait for the rest of its group.
        delay = (route.wait or 0.0) + (route.group_wait if route.group_by else 0.0)
        due_at = now + delay if delay else None
        group = group_key_of(route, subject)
        for destination in route.destinations:
            add(route.name, destination, "notify", None, due_at=due_at, group_key=group)
    return enqueued


def group_key_of(route: Route, subject: Subject) -> str | None:
    """The route's ``group_by`` values of an activity ("organization=7"), or None when
    the route does not group; an unknown value groups with the other unknowns."""
    if not route.group_by:
        return None
    entities = {
        "organization": subject.organization,
        "location": subject.location,
        "device": subject.device,
    }
    values = [entities[key].get("id") for key in route.group_by]
    parts = [
        f"{key}={'' if v is None else v}" for key, v in zip(route.group_by, values, strict=True)
    ]
    return ",".join(parts)[:300]


@dataclass(frozen=True)
class RoutePreview:
    """What a route does with an activity, as ``routes test`` reports it."""

    route: Route
    matched: bool
    # "notify", "resolved", or None when the route stays quiet.
    event: str | None
    # Why it stays quiet or is not sent; None when a message would go out.
    reason: str | None
    # How it would go out when it does: after a wait, in a group, saying it flaps.
    notes: tuple[str, ...] = ()


def preview_routes(
    conn: Connection,
    routes: RoutesConfig,
    payload: dict[str, Any],
    activity_id: int,
    arrived_at: float,
    *,
    suppress: Suppress | None = None,
    now: float | None = None,
) -> list[RoutePreview]:
    """What each route does with a stored activity, judged from the stored state now, by
    the rules enqueueing and the worker apply: once_per_alert (a repeat stays quiet, a
    TRIGGERED older than the RESET that closed the alert too), ``resolved``,
    ``max_lateness``, a silence or maintenance window in force now (``suppress``), and
    how a notification would go out: after the route's ``wait``, in its group, or not at
    all while its condition flaps. Reads only."""
    now = time.time() if now is None else now
    key = alert_key(payload)
    is_reset = payload.get("statusCode") in RESET_CODES
    subject = describe(conn, payload)
    raw_time = payload.get("activityTime")
    activity_time = float(raw_time) if isinstance(raw_time, int | float) else None
    previews: list[RoutePreview] = []
    for route in routes.routes:
        matched = matches(route.match, subject)
        alert_aware = key is not None and route.once_per_alert
        if key is not None and is_reset and alert_aware:
            whole = matches(replace(route.match, status_codes=None), subject)
            notice = store.route_notice(conn, route.name, key)
            if notice is None or notice.state != "open":
                closed_here = notice is not None and notice.resolved_activity_id == activity_id
                why = (
                    "this RESET resolved the route's notice of the alert"
                    if closed_here
                    else "the route has no open notice of this alert"
                )
                event = "resolved" if closed_here and route.send_resolved else None
                previews.append(RoutePreview(route, whole, event, None if event else why))
            elif not route.send_resolved:
                previews.append(RoutePreview(route, whole, None, "resolved: false"))
            else:
                previews.append(RoutePreview(route, whole, "resolved", None))
            continue
        if not matched:
            previews.append(RoutePreview(route, False, None, "no match"))
            continue
        if alert_aware:
            notice = store.route_notice(conn, route.name, str(key))
            if notice is not None and notice.opened_activity_id != activity_id:
                if notice.state == "open":
                    previews.append(
                        RoutePreview(
                            route,
                            True,
                            None,
                            "once_per_alert: the alert was notified already "
                            f"(activity {notice.opened_activity_id})",
                        )
                    )
                    continue
                older = (
                    activity_time is not None
                    and notice.state_activity_time is not None
                    and activity_time < notice.state_activity_time
                )
                if older:
                    previews.append(
                        RoutePreview(
                            route, True, None, "older than the RESET that resolved the alert"
                        )
                    )
                    continue
        late = too_late(route, payload, arrived_at)
        if late is not None:
            previews.append(RoutePreview(route, True, None, late))
            continue
        suppressed = suppress(conn, subject, route, now) if suppress else None
        if suppressed is not None:
            previews.append(RoutePreview(route, True, None, f"suppressed: {suppressed.reason}"))
            continue
        quiet = flapping.quiet_now(conn, route, payload, now)
        if quiet is not None:
            previews.append(RoutePreview(route, True, None, quiet))
            continue
        notes: list[str] = []
        if route.wait:
            notes.append(
                f"wait {flapping.duration_text(route.wait)}: sent only if the alert is "
                "still open then"
            )
        group = group_key_of(route, subject)
        if group is not None:
            notes.append(
                f"grouped by {group} for {flapping.duration_text(route.group_wait)}: "
                "one message with the other alerts of the group"
            )
        if route.repeat:
            notes.append(f"reminder every {flapping.duration_text(route.repeat)} while open")
        previews.append(RoutePreview(route, True, "notify", None, tuple(notes)))
    return previews


# Why a delivery was skipped (its last_error starts with one of these).
SKIP_LATE = "late"
SKIP_RESOLVED_FIRST = "resolved first"
SKIP_SUPERSEDED = "superseded"
SKIP_RESET_IN_WAIT = "reset within wait"
SKIP_REMINDER_OVER = "no reminder"
# A reminder's event is "reminder <n>" (n from 1): every reminder is its own outbox row.
REMINDER = "reminder"
# How many due reminders one scan enqueues; the next scan takes the rest.
REMINDER_SCAN_LIMIT = 200


def is_reminder(event: str) -> bool:
    """True for a reminder's event ("reminder <n>")."""
    return event.startswith(REMINDER)


# A TRIGGERED that arrives this long after its alert's RESET happened (NinjaOne's
# activityTime) arrived after the alert was over: a backfill or a redelivery. The margin
# keeps clock skew from making a live flap look like one.
ALREADY_OVER_MARGIN = 60.0


@dataclass(frozen=True)
class Verdict:
    """What the lifecycle rules say about a claimed delivery: send it (as a summary when
    ``trigger`` is set), or skip it for ``reason``."""

    send: bool
    reason: str | None = None
    trigger: dict[str, Any] | None = None


SEND = Verdict(send=True)


def lateness(payload: dict[str, Any], arrived_at: float) -> float | None:
    """Seconds between an activity's activityTime and its arrival; None without a time."""
    raw = payload.get("activityTime")
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not math.isfinite(raw):
        return None
    return arrived_at - float(raw)


def too_late(route: Route, payload: dict[str, Any], arrived_at: float) -> str | None:
    """The skip reason when the activity arrived more than the route's max_lateness
    after its activityTime, else None."""
    late = lateness(payload, arrived_at)
    if route.max_lateness is None or late is None or late <= route.max_lateness:
        return None
    return (
        f"{SKIP_LATE}: the activity arrived {late:.0f}s after it happened "
        f"(max_lateness {route.max_lateness:.0f}s)"
    )


def lifecycle_verdict(
    conn: Connection, route: Route, row: Row[Any], payload: dict[str, Any]
) -> Verdict:
    """Whether a claimed delivery is sent, from the stored state of its route and alert.

    The lifecycle of a route's alert at a destination only moves forward: one
    notification, then at most one "resolved", in that order, whatever fails, is
    retried, replayed or arrives late. Claiming (:func:`app.storage.notifications.claim`)
    and this function share the work; every rule is here:

    ============================  ================================================  ==========
    delivery                      stored state when it is claimed                   what it does
    ============================  ================================================  ==========
    notify                        the activity arrived more than ``max_lateness``   skipped
                                  after its activityTime (backfill, redelivery)     (late)
    notify (once_per_alert)       the route's notice of the alert was opened by a   skipped
                                  later TRIGGERED (the alert reset and triggered    (superseded)
                                  again): that one's notification stands for it
    notify (once_per_alert)       the notice is resolved, and this is a dead        skipped
                                  letter retried or a replay (an operator queued    (resolved
                                  it again), or the TRIGGERED arrived a minute or   first)
                                  more after the RESET happened (backfill,
                                  redelivery: the alert was over on arrival)
    notify (once_per_alert)       otherwise (open; or resolved while this waited    sent
                                  for its first attempts: the "resolved" follows)
    notify (once_per_alert,       the notice is resolved, on the first attempt      skipped
    ``wait``)                     (a RESET inside the wait): its "resolved" is      (reset
                                  skipped too, nothing is sent                      within wait)
    reminder <n> (``repeat``)     the notice is resolved, or reopened by a later    skipped
                                  TRIGGERED                                         (no reminder)
    reminder <n>                  otherwise                                         sent
    notify (other routes)         (no lifecycle: one message per activity)          sent
    resolved                      its notify pending or in flight                   waits (claim)
    resolved                      its notify a dead letter                          held as a
                                                                                    dead letter
                                                                                    (claim);
                                                                                    retrying
                                                                                    the notify
                                                                                    retries it
    resolved                      its notify was delivered (now, or before a        sent
                                  replay that skipped it)
    resolved                      its notify was skipped as resolved first and      sent, as one
                                  never delivered, ``notify_resolved_late: true``   summary
    resolved                      otherwise: no notify for this destination, or it  skipped
                                  was late, suppressed or never delivered
    ============================  ================================================  ==========

    A notification these rules send may still be held back by its route's ``flapping``
    (:mod:`app.notifications.flapping`), and one of a ``group_by`` route goes out in its
    group's message (:meth:`Worker.deliver_batch`).

    A replayed notification whose alert is over is skipped; its replayed "resolved" goes
    out again, so the destination ends resolved. Two workers keep the order: the
    "resolved" is not claimable until its notification is finished, and each decision is
    taken under the delivery's lease.
    """
    if is_reminder(row.event):
        notice = store.route_notice(conn, row.route, row.alert_key or "")
        if notice is None or notice.state != "open" or notice.opened_activity_id != row.activity_id:
            return Verdict(
                send=False, reason=f"{SKIP_REMINDER_OVER}: the alert was resolved or reopened"
            )
        return SEND
    if row.event == "acknowledge":
        skip = acknowledge_skip(conn, row)
        return SEND if skip is None else Verdict(send=False, reason=skip)
    if row.event != "resolved":
        reason = too_late(route, payload, row.created_at)
        if reason is not None:
            return Verdict(send=False, reason=reason)
        if route.once_per_alert and row.alert_key is not None:
            notice = store.route_notice(conn, row.route, row.alert_key)
            if notice is None or (
                notice.state == "open" and notice.opened_activity_id == row.activity_id
            ):
                return SEND
            if notice.opened_activity_id != row.activity_id:
                return Verdict(
                    send=False,
                    reason=f"{SKIP_SUPERSEDED}: the alert reset and triggered again "
                    f"(activity {notice.opened_activity_id}) before this was delivered",
                )
            # An operator's retry or replay sets attempts back to 0 (the claim made it 1);
            # the row had finished before, so it has an error or a delivery time.
            requeued = row.attempts == 1 and (
                row.last_error is not None or row.delivered_at is not None
            )
            reset_at = notice.state_activity_time
            over_on_arrival = (
                reset_at is not None and reset_at + ALREADY_OVER_MARGIN <= row.created_at
            )
            if requeued or over_on_arrival:
                return Verdict(
                    send=False,
                    reason=f"{SKIP_RESOLVED_FIRST}: the alert was resolved "
                    + ("before this was sent again" if requeued else "before it arrived"),
                )
            if route.wait is not None and row.attempts == 1:
                return Verdict(
                    send=False,
                    reason=f"{SKIP_RESET_IN_WAIT}: the alert reset before the route's "
                    f"wait ({route.wait:.0f}s) was over",
                )
        return SEND
    if row.refers_to is None:
        return Verdict(send=False, reason="no notification of this alert went to this destination")
    notification = store.notification_of(conn, row.refers_to)
    if notification is None or notification.delivered_at is not None:
        # A notification pruned by retention was finished long ago: it went out.
        return SEND
    if (
        route.notify_resolved_late
        and notification.status == store.SKIPPED
        and str(notification.last_error or "").startswith(SKIP_RESOLVED_FIRST)
    ):
        raw = activity_store.get_activity_raw(conn, notification.activity_id)
        trigger = json.loads(raw) if raw is not None else {}
        return Verdict(send=True, trigger=trigger)
    why = notification.last_error or notification._mapping.get("suppressed_reason")
    return Verdict(
        send=False,
        reason=f"its notification {notification.uid} was never delivered "
        f"({notification.status}{f': {why}' if why else ''})",
    )


@dataclass(frozen=True)
class Composed:
    """A claimed delivery's message, ready to send."""

    destination: Destination
    message: Message


def batches(rows: list[Row[Any]]) -> list[list[Row[Any]]]:
    """Claimed rows by what is sent as one: a grouped notification's group (its route,
    destination and group_key), every other row alone; in claim order."""
    grouped: dict[tuple[str, str, str], list[Row[Any]]] = {}
    out: list[list[Row[Any]]] = []
    for row in rows:
        if row.group_key is None or row.event != "notify":
            out.append([row])
            continue
        key = (row.route, row.destination, row.group_key)
        if key not in grouped:
            grouped[key] = []
            out.append(grouped[key])
        grouped[key].append(row)
    return out


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
            destination.vendor.credential if destination.vendor else None,
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
        self.skipped = 0
        self.reminding = [r.name for r in self.routes.routes if r.repeat is not None]
        self.suppress = state.suppress
        self.group_waits = {r.name: r.group_wait for r in self.routes.routes if r.group_by}
        self._next_reminder_scan = 0.0

    def close(self) -> None:
        """Release the HTTP connections."""
        self.http.close()

    def claim(self, limit: int) -> list[Row[Any]]:
        """Take up to ``limit`` due deliveries (and the rest of the groups they lead)."""
        with self.state.db.begin() as conn:
            return store.claim(
                conn,
                now=time.time(),
                lease=self.lease,
                holder=self.holder,
                limit=limit,
                group_waits=self.group_waits,
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
                if self.reminding and time.monotonic() >= self._next_reminder_scan:
                    self._next_reminder_scan = time.monotonic() + self.poll_interval
                    self.enqueue_reminders()
                taken = (
                    self.claim(self.concurrency - len(inflight))
                    if len(inflight) < self.concurrency
                    else []
                )
                inflight.update(pool.submit(self.deliver_batch, b) for b in batches(taken))
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

    def enqueue_reminders(self, now: float | None = None) -> int:
        """Enqueue the reminders that are due (a route's ``repeat``); returns how many.

        One indexed scan of the notices whose ``remind_at`` has passed, once per poll:
        nothing is done per activity. Each due notice moves on to its next reminder in
        the transaction that enqueues this one ("reminder <n>", referring to the
        notification, to every destination that received it), and the conditional move
        lets only one of several racing workers enqueue it.
        """
        if not self.reminding:
            return 0
        # ``now`` judges which reminders are due (a test moves it on); the rows are
        # stamped, and due, at the real time.
        stamped = time.time()
        now = stamped if now is None else now
        made = 0
        with self.state.db.begin() as conn:
            for notice in store.due_reminders(conn, self.reminding, now, REMINDER_SCAN_LIMIT):
                route = self.routes.route(notice.route)
                if route is None or route.repeat is None:
                    continue
                number = store.take_reminder(
                    conn, notice.route, notice.alert_key, notice.remind_at, now + route.repeat
                )
                if number is None:
                    continue
                # A silence or maintenance window that began after the notification
                # quiets its reminders too (recorded as suppressed, the schedule goes on).
                held = self._held_back(conn, notice.opened_activity_id, route, now)
                for sent in store.delivered_notifications(
                    conn, notice.opened_activity_id, notice.route
                ):
                    if sent.destination not in route.destinations:
                        continue
                    uid = store.enqueue(
                        conn,
                        activity_id=notice.opened_activity_id,
                        route=notice.route,
                        destination=sent.destination,
                        kind=sent.kind,
                        event=f"{REMINDER} {number}",
                        alert_key=notice.alert_key,
                        refers_to=sent.uid,
                        now=stamped,
                        suppressed_reason=held.reason if held else None,
                        silence_id=held.silence_id if held else None,
                    )
                    made += uid is not None and held is None
        return made

    def _held_back(
        self, conn: Connection, activity_id: int, route: Route, now: float
    ) -> Suppression | None:
        if self.suppress is None:
            return None
        raw = activity_store.get_activity_raw(conn, activity_id)
        if raw is None:
            return None
        return self.suppress(conn, describe(conn, json.loads(raw)), route, now)

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
        if isinstance(outcome, Verdict):
            self._record_skip(row, outcome.reason or "skipped")
        else:
            self._record(row, outcome)

    def _record_skip(self, row: Row[Any], reason: str) -> None:
        with self.state.db.begin() as conn:
            kept = store.mark_skipped(conn, row.id, self.holder, time.time(), reason)
        self.skipped += 1
        log.info(
            "delivery %s (%s → %s, %s) not sent: %s",
            row.uid,
            row.route,
            row.destination,
            row.event,
            reason,
        )
        if not kept:
            log.warning("delivery %s: lease lost to another worker; outcome not recorded", row.uid)

    def _attempt(self, row: Row[Any]) -> Outcome | Verdict:
        composed = self._compose(row)
        if not isinstance(composed, Composed):
            return composed
        return self._send(composed.destination, composed.message, row)

    def _send(self, destination: Destination, message: Message, row: Row[Any]) -> Outcome:
        return (send_to_vendor if destination.vendor is not None else send)(
            destination,
            message,
            Envelope(
                delivery_id=row.uid,
                refers_to=row.refers_to,
                mail_domain=mail_domain(self.state.config),
            ),
            route=row.route,
            timeout=self.timeout,
            client=self.http,
        )

    def deliver_batch(self, rows: list[Row[Any]]) -> None:
        """Deliver what one claim took together: a group's notifications (a route's
        ``group_by``) as one message listing them, anything else one by one."""
        if len(rows) == 1:
            self.deliver(rows[0])
            return
        composed: list[tuple[Row[Any], Composed]] = []
        for row in rows:
            try:
                made = self._compose(row)
            except Exception as exc:
                log.exception("delivery %s: unexpected error", row.uid)
                made = Outcome(ok=False, error=f"internal error: {exc.__class__.__name__}")
            if isinstance(made, Verdict):
                self._record_skip(row, made.reason or "skipped")
            elif isinstance(made, Outcome):
                self._record(row, made)
            else:
                composed.append((row, made))
        if not composed:
            return
        leader, first = composed[0]
        if len(composed) == 1:
            message = first.message
        else:
            markup = markup_for(first.destination.kind)
            message = render_group([c.message for _r, c in composed], markup)
        try:
            outcome = self._send(first.destination, message, leader)
        except Exception as exc:  # a bug must not kill the worker; the lease covers us
            log.exception("delivery %s: unexpected error", leader.uid)
            outcome = Outcome(ok=False, error=f"internal error: {exc.__class__.__name__}")
        # Every notification of the group had the same fate: they were one message. A
        # failed one is retried together, due at one time, so the same notification leads
        # it again and the retry has the same delivery id.
        retry_at = None
        if not outcome.ok:
            retry_at = time.time() + retry_delay(
                leader.attempts, self.backoff, self.backoff_max, outcome.retry_after
            )
        self._record_all([row for row, _composed in composed], outcome, retry_at)

    def _compose(self, row: Row[Any]) -> Composed | Outcome | Verdict:
        """The message of a claimed delivery, or why it is not sent."""
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
            payload = json.loads(raw)
            verdict = lifecycle_verdict(conn, route, row, payload)
            if not verdict.send:
                return verdict
            subject = describe(conn, payload)
        flap = flapping.judge(self.state.db, route, row, payload)
        if flap.quiet is not None:
            return Verdict(send=False, reason=flap.quiet)
        event = REMINDER if is_reminder(row.event) else row.event
        context = template_context(
            subject,
            route=row.route,
            event=event,
            alert_key=row.alert_key,
            delivery_id=row.uid,
            refers_to=row.refers_to,
            links=message_links(
                self.state.config,
                alert_key=row.alert_key,
                activity_id=row.activity_id,
                device_id=subject.device.get("id"),
            ),
            trigger=verdict.trigger,
        )
        if flap.announce is not None:
            context["flapping"] = flap.announce
        if event == REMINDER:
            context["reminder"] = int(row.event.removeprefix(REMINDER).strip() or 1)
        try:
            message = render(
                context, route.title, route.template, markup=markup_for(destination.kind)
            )
        except jinja2.TemplateError as exc:
            return Outcome(ok=False, permanent=True, error=f"template error: {exc}")
        return Composed(destination, message)

    def _record(self, row: Row[Any], outcome: Outcome) -> None:
        self._record_all([row], outcome)

    def _record_all(
        self, rows: list[Row[Any]], outcome: Outcome, retry_at: float | None = None
    ) -> None:
        """Record an attempt's outcome for ``rows`` (one delivery, or a group sent as one
        message) in one transaction, so no claim sees part of a group finished; a failure
        is retried at ``retry_at`` when given, after a backoff otherwise."""
        now = time.time()
        with self.state.db.begin() as conn:
            lost = [r for r in rows if not self._record_in(conn, r, outcome, retry_at, now)]
        for row in lost:
            log.warning("delivery %s: lease lost to another worker; outcome not recorded", row.uid)

    def _record_in(
        self,
        conn: Connection,
        row: Row[Any],
        outcome: Outcome,
        retry_given: float | None,
        now: float,
    ) -> bool:
        if outcome.ok:
            kept = store.mark_delivered(conn, row.id, self.holder, now, outcome.status_code)
            route = self.routes.route(row.route)
            if (
                kept
                and row.event == "notify"
                and row.alert_key is not None
                and route is not None
                and route.repeat is not None
            ):
                store.arm_reminder(
                    conn, row.route, row.alert_key, row.activity_id, now + route.repeat
                )
            self.sent += 1
            log.info("delivery %s (%s → %s) delivered", row.uid, row.route, row.destination)
        else:
            self.failed += 1
            final = outcome.permanent or row.attempts >= self.max_attempts
            retry_at = None
            if not final and retry_given is not None:
                retry_at = retry_given
            elif not final:
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
                "dead letter" if final else f"retry in {retry_at - now:.1f}s" if retry_at else "",
            )
        return kept


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
