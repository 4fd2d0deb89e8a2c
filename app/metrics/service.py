"""Prometheus metrics that add up across gunicorn workers and hosts.

Counters live in the database (table ``metric_counters``), not in process memory,
so /metrics answers the same totals whichever worker serves it and whatever
worker restarted. Each process collects increments in a :class:`CounterBuffer`
and adds them to the table at most :data:`FLUSH_DELAY` seconds later (and
before it answers a scrape), one small transaction for many deliveries.
Gauges (open alerts by severity) and spec drift are read from their own tables
at scrape time.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.ingest.errors import database_unavailable
from app.notifications.reads import notification_metrics
from app.spec.generated import KNOWN_VALUES
from app.state import AppState
from app.storage import entities as entity_store
from app.storage import metrics as store
from app.storage.db import Database
from app.storage.rejected import DROPPED_COUNTER

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FLUSH_DELAY = 1.0

RECEIVED = "activities_received"
BACKFILL_RUNS = "backfill_runs"
# The entity cache's background fetches (app.ninjaone.refresh): by kind and outcome
# (ok, not_found, error), and the misses that caused them, by kind.
ENTITY_FETCHES = "entity_fetches"
ENTITY_MISSES = "entity_misses"
LATENCY = "ingest_latency_seconds"
# Upper bounds of the latency histogram's buckets, in seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
SEVERITIES = ("NONE", "MINOR", "MODERATE", "MAJOR", "CRITICAL")

# activityType is a label value a sender chooses. A value webhook.yaml lists is its own
# label; so is an unknown one up to UNKNOWN_LABEL_LENGTH characters (of a safe
# alphabet), for the first UNKNOWN_LABELS distinct unknown values a process sees.
# Every other value is counted under OTHER_LABEL, so no sender can make a label row
# too long to store (metric_counters.labels is String(500)) or make the series endless.
KNOWN_ACTIVITY_TYPES = KNOWN_VALUES.get(("activityType",), frozenset())
UNKNOWN_LABEL_LENGTH = 64
UNKNOWN_LABELS = 100
OTHER_LABEL = "other"
_LABEL_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:")
# The labels column's limit (metric_counters.labels is String(500)).
LABELS_LIMIT = 500


def _labels_key(labels: dict[str, str]) -> str:
    return _labels_key_of(tuple(sorted(labels.items())))


# Every delivery counts three label sets, nearly always ones seen before: remembering
# their keys saves a sorted json.dumps each. Bounded, because activityType is an open
# enum and so a label value a sender chooses.
@functools.lru_cache(maxsize=1024)
def _labels_key_of(items: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(dict(items), sort_keys=True, separators=(",", ":"))


class LabelBound:
    """The bounded set of unknown activityType label values of one process."""

    def __init__(self, limit: int = UNKNOWN_LABELS) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def label(self, value: str | None) -> str:
        """The label value to count ``value`` under."""
        if not value:
            return ""
        if value in KNOWN_ACTIVITY_TYPES:
            return value
        if len(value) > UNKNOWN_LABEL_LENGTH or not _LABEL_CHARACTERS.issuperset(value):
            return OTHER_LABEL
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER_LABEL


_ACTIVITY_TYPE_LABELS = LabelBound()


def activity_type_label(value: str | None) -> str:
    """The activityType label value a delivery is counted under (see :class:`LabelBound`)."""
    return _ACTIVITY_TYPE_LABELS.label(value)


class CounterBuffer:
    """Increments of this process not yet added to the database.

    The first increment after a flush arms a timer, so a burst of deliveries costs
    one write and an idle worker's counts still reach the database within
    :data:`FLUSH_DELAY` seconds.
    """

    def __init__(self, db: Database, delay: float = FLUSH_DELAY) -> None:
        self.db = db
        self.delay = delay
        self._pending: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def add(self, name: str, labels: dict[str, str], amount: float = 1.0) -> None:
        """Count ``amount`` more of ``name`` with ``labels``."""
        key = (name, _labels_key(labels))
        if len(key[1]) > LABELS_LIMIT:
            log.warning("metrics: labels of %s too long to store; counted as %s", name, OTHER_LABEL)
            key = (name, _labels_key(dict.fromkeys(labels, OTHER_LABEL)))
        with self._lock:
            self._pending[key] = self._pending.get(key, 0.0) + amount
            if self._timer is None:
                self._timer = threading.Timer(self.delay, self.flush_quietly)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Add every pending increment to the database now (one transaction)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if not pending:
            return
        try:
            with self.db.begin() as conn:
                for (name, labels), amount in sorted(pending.items()):
                    store.add_to_counter(conn, name, labels, amount)
        except Exception as exc:
            if database_unavailable(exc):
                # Keep the counts for the next attempt rather than losing them.
                self._keep(pending)
                raise
            # One entry the database refuses must not hold back the others for good:
            # store each alone, and drop (with a log line) only the ones refused.
            self._flush_each(pending)

    def _keep(self, pending: dict[tuple[str, str], float]) -> None:
        with self._lock:
            for key, amount in pending.items():
                self._pending[key] = self._pending.get(key, 0.0) + amount

    def _flush_each(self, pending: dict[tuple[str, str], float]) -> None:
        unavailable: Exception | None = None
        for index, ((name, labels), amount) in enumerate(sorted(pending.items())):
            try:
                with self.db.begin() as conn:
                    store.add_to_counter(conn, name, labels, amount)
            except Exception as exc:
                if database_unavailable(exc):
                    self._keep(dict(sorted(pending.items())[index:]))
                    unavailable = exc
                    break
                log.error(
                    "metrics: dropped %g from counter %s %.100s: %s",
                    amount,
                    name,
                    labels,
                    exc.__class__.__name__,
                )
        if unavailable is not None:
            raise unavailable

    def flush_quietly(self) -> None:
        """:meth:`flush`, logging a failure instead of raising (timer and shutdown)."""
        try:
            self.flush()
        except Exception as exc:
            log.warning("metrics: could not store counters: %s", exc.__class__.__name__)


def buffer_for(state: AppState) -> CounterBuffer:
    """The :class:`CounterBuffer` of ``state``."""
    return state.metrics


def record_ingest(state: AppState, activity_type: str | None, outcome: str, seconds: float) -> None:
    """Count one delivery (outcome: new, duplicate, rejected, unauthorized, error) and its
    latency."""
    buffer = buffer_for(state)
    buffer.add(RECEIVED, {"activityType": activity_type_label(activity_type), "outcome": outcome})
    bucket = next((b for b in LATENCY_BUCKETS if seconds <= b), float("inf"))
    buffer.add(LATENCY + "_bucket", {"le": repr(bucket)})
    buffer.add(LATENCY + "_sum", {}, seconds)


def record_backfill_run(outcome: str, state: AppState) -> None:
    """Count one backfill run of ``state``'s app (outcome e.g. ``ok`` or ``failed``) and
    store it at once."""
    buffer = buffer_for(state)
    buffer.add(BACKFILL_RUNS, {"outcome": outcome})
    buffer.flush()


class _DatabaseCollector(Collector):
    """Builds every metric family from the database at scrape time."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        with self.state.db.connect() as conn:
            counters = store.counters(conn)
            drift = store.spec_drift_counts(conn)
            open_alerts = store.open_alerts_by_severity(conn)
            entity_states = entity_store.entity_states(conn)

        received = CounterMetricFamily(
            "ninjahook_activities_received",
            "Deliveries received, by activityType and outcome "
            "(new, duplicate, rejected, unauthorized, error).",
            labels=["activityType", "outcome"],
        )
        backfill = CounterMetricFamily(
            "ninjahook_backfill_runs", "Backfill runs, by outcome.", labels=["outcome"]
        )
        dropped = CounterMetricFamily(
            "ninjahook_rejected_dropped",
            "Rejected deliveries dropped, oldest first, to stay within "
            "NINJAHOOK_REJECTED_MAX_ROWS and NINJAHOOK_REJECTED_MAX_BYTES.",
            labels=[],
        )
        fetches = CounterMetricFamily(
            "ninjahook_entity_fetches",
            "Entity cache fetches from NinjaOne (misses, change events, list refreshes), "
            "by kind (device, organization, location) and outcome (ok, not_found, error).",
            labels=["kind", "outcome"],
        )
        misses = CounterMetricFamily(
            "ninjahook_entity_misses",
            "Activities' entities the cache did not have and fetched, by kind.",
            labels=["kind"],
        )
        dropped_total = 0.0
        buckets: dict[float, float] = dict.fromkeys([*LATENCY_BUCKETS, float("inf")], 0.0)
        latency_sum = 0.0
        for name, labels_json, value in counters:
            labels = json.loads(labels_json)
            if name == RECEIVED:
                received.add_metric([labels["activityType"], labels["outcome"]], value)
            elif name == BACKFILL_RUNS:
                backfill.add_metric([labels["outcome"]], value)
            elif name == LATENCY + "_bucket":
                buckets[float(labels["le"])] = buckets.get(float(labels["le"]), 0.0) + value
            elif name == LATENCY + "_sum":
                latency_sum += value
            elif name == DROPPED_COUNTER:
                dropped_total += value
            elif name == ENTITY_FETCHES:
                fetches.add_metric([labels["kind"], labels["outcome"]], value)
            elif name == ENTITY_MISSES:
                misses.add_metric([labels["kind"]], value)
        dropped.add_metric([], dropped_total)
        yield received
        yield backfill
        yield dropped
        yield fetches
        yield misses
        entities = GaugeMetricFamily(
            "ninjahook_cached_entities",
            "Entities in the cache, by kind and state (cached: present in NinjaOne as last "
            "seen; deleted: NinjaOne deleted it, kept for history).",
            labels=["kind", "state"],
        )
        for kind, (total, deleted) in entity_states.items():
            entities.add_metric([kind, "cached"], total - deleted)
            entities.add_metric([kind, "deleted"], deleted)
        yield entities

        cumulative: list[tuple[str, float]] = []
        running = 0.0
        for bound in sorted(buckets):
            running += buckets[bound]
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        yield HistogramMetricFamily(
            "ninjahook_ingest_latency_seconds",
            "Time from a delivery's arrival to its answer.",
            buckets=cumulative,
            sum_value=latency_sum,
        )

        drift_family = CounterMetricFamily(
            "ninjahook_spec_drift",
            "Deliveries carrying a value webhook.yaml does not list, by field and value.",
            labels=["field", "value"],
        )
        for drift_field, drift_value, sightings in drift:
            drift_family.add_metric([drift_field, drift_value], sightings)
        yield drift_family

        gauge = GaugeMetricFamily(
            "ninjahook_open_alerts", "Alerts open now, by severity.", labels=["severity"]
        )
        for severity in SEVERITIES:
            gauge.add_metric([severity], open_alerts.pop(severity, 0))
        for other, count in sorted(open_alerts.items(), key=lambda i: str(i[0])):
            gauge.add_metric([other or ""], count)
        yield gauge
        yield from _delivery_families(self.state)


def _delivery_families(state: AppState) -> Iterator[Metric]:
    """The outbox's state (app.notifications)."""
    found = notification_metrics(state)
    by_status = GaugeMetricFamily(
        "ninjahook_deliveries",
        "Routed deliveries in the outbox, by destination, kind and status.",
        labels=["destination", "kind", "status"],
    )
    for row in found.counts:
        by_status.add_metric([row.destination, row.kind, row.status], row.count)
    yield by_status
    yield GaugeMetricFamily(
        "ninjahook_delivery_queue_depth",
        "Deliveries pending or in flight.",
        value=found.queue_depth,
    )
    yield GaugeMetricFamily(
        "ninjahook_delivery_oldest_pending_age_seconds",
        "Seconds since the oldest pending delivery was enqueued (0 when none).",
        value=found.oldest_pending_age,
    )


def exposition(state: AppState) -> bytes:
    """The Prometheus text format for every metric, this process's increments included."""
    try:
        buffer_for(state).flush()
    except sa.exc.SQLAlchemyError as exc:
        log.warning("metrics: could not store counters: %s", exc.__class__.__name__)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DatabaseCollector(state))
    return generate_latest(registry)
