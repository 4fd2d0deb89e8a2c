"""The status report: one line per thing that can silently stop a technician from
seeing the truth, each green, amber or red with its reason.

Everything is read through :mod:`app.storage` (and, with ``probe_api``, one token
request to NinjaOne). The thresholds are module constants so the docs and the tests
name the same numbers.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config import Config
from app.ninjaone import runs
from app.ninjaone.client import NinjaOneClient, NinjaOneError, credentials_configured
from app.ninjaone.schedule import backfill_schedule, duration, sync_schedule
from app.ninjaone.sync import BACKFILL_CHECKPOINT
from app.state import AppState
from app.storage import activities as activity_store
from app.storage import notifications as notification_store
from app.storage import rejected as rejected_store
from app.storage import status as store
from app.storage.db import Database
from app.timeparse import iso

GREEN, AMBER, RED = "green", "amber", "red"
LEVELS = (GREEN, AMBER, RED)

HOUR = 3600.0
DAY = 86400.0
# No webhook delivery for this long: amber, then red.
DELIVERY_AMBER = HOUR
DELIVERY_RED = DAY
# Free space where the instance folder (and the SQLite database) lives.
GIB = 1024**3
MIB = 1024**2
DISK_AMBER = 1 * GIB
DISK_RED = 100 * MIB
# A periodic run older than this many intervals is overdue.
OVERDUE_INTERVALS = 3
# How long `ninjahook status` waits for NinjaOne's token endpoint.
PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    level: str
    summary: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "level": self.level, "summary": self.summary}


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    checked_at: float = 0.0

    @property
    def level(self) -> str:
        """The worst level of any line."""
        return max((c.level for c in self.checks), key=LEVELS.index, default=GREEN)

    @property
    def ok(self) -> bool:
        """Nothing is red (the CLI's exit status 0)."""
        return self.level != RED

    def as_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "checkedAt": iso(self.checked_at),
            "checks": [c.as_json() for c in self.checks],
        }


def ago(seconds: float) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``: a rough age."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", DAY), ("h", HOUR), ("m", 60.0)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def status_report(state: AppState, *, now: float | None = None, probe_api: bool = True) -> Report:
    """:func:`report` for an app's state."""
    return report(state.config, state.db, now=now, probe_api=probe_api)


def report(
    config: Config, db: Database, *, now: float | None = None, probe_api: bool = True
) -> Report:
    """Every line of the report.

    :param probe_api: ask NinjaOne for a token with the configured credentials (the CLI
        and ``GET /status``); the dashboard panel skips it and relies on the last backfill.
    """
    now = time.time() if now is None else now
    with db.connect() as conn:
        webhook_marks = store.get_marks(conn, runs.WEBHOOK)
        backfill_marks = store.get_marks(conn, runs.BACKFILL)
        sync_marks = store.get_marks(conn, runs.SYNC)
        checkpoint = store.checkpoint_updated(conn, BACKFILL_CHECKPOINT)
        last_delivery = store.last_received(conn, "webhook")
        entities = store.entity_counts(conn)
        dead = notification_store.count_notifications(
            conn, notification_store.NotificationFilter(statuses=(notification_store.DEAD,))
        )
        rejected = rejected_store.count_rows(conn)
        newest_rejected = store.newest_rejected_at(conn)
        drift = activity_store.list_spec_drift(conn)
    checks = [_webhook(webhook_marks, last_delivery, now)]
    if credentials_configured(config):
        if probe_api:
            checks.append(_probe(config))
    else:
        checks.append(
            Check(
                "NinjaOne API",
                AMBER,
                "no NINJAONE_CLIENT_ID/NINJAONE_CLIENT_SECRET: missed deliveries are not "
                "recovered and the entity cache is filled by deliveries only",
            )
        )
    checks += [
        _delivery(last_delivery, now),
        _backfill(config, backfill_marks, checkpoint, now),
        _cache(config, sync_marks, entities, now),
        _dead_letters(dead),
        _rejected(rejected, newest_rejected, now),
        _drift(drift),
        _disk(config, db),
    ]
    return Report(checks, now)


def _webhook(marks: dict[str, tuple[int, float]], last_delivery: float | None, now: float) -> Check:
    name = "NinjaOne webhook"
    # NinjaOne's API has no GET /v2/webhook: what `configure` last sent is the evidence.
    if "enabled" not in marks:
        if last_delivery is not None and now - last_delivery < DELIVERY_AMBER:
            return Check(name, GREEN, "deliveries arrive (not set by `ninjahook configure` here)")
        return Check(
            name,
            AMBER,
            "no `ninjahook configure` recorded in this database: NinjaOne may not be "
            "delivering here",
        )
    enabled, at = marks["enabled"]
    if not enabled:
        return Check(
            name,
            RED,
            f"turned off by `ninjahook disable` {ago(now - at)} ago: nothing is delivered",
        )
    types = marks.get("activity_types", (0, at))[0]
    return Check(
        name,
        GREEN,
        f"`ninjahook configure` set it {ago(now - at)} ago ({types} activity types); "
        "NinjaOne's API cannot show it back",
    )


def _probe(config: Config) -> Check:
    name = "NinjaOne API"
    try:
        with NinjaOneClient.from_config(
            config, timeout=PROBE_TIMEOUT, max_retries=0, transport_retries=0
        ) as client:
            client.access_token()
            base = client.creds.base_url
    except NinjaOneError as exc:
        return Check(name, RED, " ".join(str(exc).split()))
    return Check(name, GREEN, f"{base} accepts the client credentials")


def _delivery(last: float | None, now: float) -> Check:
    name = "Last delivery"
    if last is None:
        return Check(name, AMBER, "no webhook delivery received yet")
    age = now - last
    text = f"{ago(age)} ago ({iso(last)})"
    if age >= DELIVERY_RED:
        return Check(name, RED, f"no delivery for {text}: is NinjaOne's webhook set?")
    if age >= DELIVERY_AMBER:
        return Check(name, AMBER, f"no delivery for {text}")
    return Check(name, GREEN, text)


def _overdue(at: float, interval: int, now: float) -> bool:
    return interval > 0 and now - at > OVERDUE_INTERVALS * interval + 60


def _backfill(
    config: Config,
    marks: dict[str, tuple[int, float]],
    checkpoint: tuple[int, float] | None,
    now: float,
) -> Check:
    name = "Backfill"
    schedule = backfill_schedule(config)
    if not config.background_tasks and schedule.active:
        when = f"{schedule.reason}, but NINJAHOOK_BACKGROUND_TASKS=0 here"
    else:
        when = schedule.reason
    if "ok" not in marks:
        return Check(name, AMBER, f"no run recorded yet; {when}")
    ok, at = marks["ok"]
    if not ok:
        reason = runs.FAILURES.get(marks.get("failure", (9, at))[0], runs.FAILURES[9])
        return Check(name, RED, f"failed {ago(now - at)} ago: {reason}; {when}")

    def count(key: str) -> int:
        return marks.get(key, (0, at))[0]

    found = (
        f"{count('fetched')} fetched, {count('new')} missed by the webhook and stored, "
        f"{count('rejected')} rejected"
    )
    if checkpoint is not None:
        found += f"; complete up to activity {checkpoint[0]}"
    text = f"{ago(now - at)} ago: {found}; {when}"
    if schedule.active and _overdue(at, schedule.interval, now):
        return Check(name, AMBER, f"overdue: last run {text}")
    if count("rejected"):
        return Check(name, AMBER, text)
    if count("new"):
        return Check(name, AMBER, f"recovered activities NinjaOne did not deliver: {text}")
    return Check(name, GREEN, text)


def _cache(
    config: Config, marks: dict[str, tuple[int, float]], counts: dict[str, int], now: float
) -> Check:
    name = "Entity cache"
    held = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    if "complete" not in marks:
        return Check(
            name, AMBER, f"{held} (from deliveries); never fully synced (`ninjahook sync`)"
        )
    at = marks["complete"][1]
    listed = ", ".join(f"{marks[k][0]} {k}" for k in counts if k in marks)
    text = f"last full sync {ago(now - at)} ago listed {listed}; holds {held}"
    schedule = sync_schedule(config)
    if schedule.active and _overdue(at, schedule.interval, now):
        return Check(name, AMBER, f"overdue (every {duration(schedule.interval)}): {text}")
    return Check(name, GREEN, text)


def _dead_letters(count: int) -> Check:
    name = "Dead letters"
    if count:
        return Check(
            name,
            AMBER,
            f"{count} notifications failed for good (`ninjahook deliveries retry`, "
            "or the dashboard's dead letters)",
        )
    return Check(name, GREEN, "none")


def _rejected(count: int, newest: float | None, now: float) -> Check:
    name = "Rejected deliveries"
    if newest is not None and now - newest < DAY:
        return Check(
            name,
            AMBER,
            f"{count} kept, newest {ago(now - newest)} ago (`ninjahook rejected list`)",
        )
    if count:
        return Check(name, GREEN, f"{count} kept, none in the last day")
    return Check(name, GREEN, "none")


def _drift(rows: list[Any]) -> Check:
    name = "Spec drift"
    if not rows:
        return Check(name, GREEN, "every enum value received is known")
    top = rows[0]
    return Check(
        name,
        AMBER,
        f"{len(rows)} unknown enum values seen (most often {top.field}={top.value!r}, "
        f"{top.count} times): GET /spec-drift",
    )


def _disk(config: Config, db: Database) -> Check:
    name = "Disk"
    folder = config.instance
    database = db.engine.url.database
    if db.engine.dialect.name == "sqlite" and database and database != ":memory:":
        folder = Path(database).resolve().parent
        where = f"for the SQLite database in {folder}"
    else:
        where = f"in the instance folder {folder} (the database server's disk is not measured)"
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return Check(name, RED, f"cannot measure {folder}: {exc.strerror or exc}")
    text = f"{_size(free)} free {where}"
    if free < DISK_RED:
        return Check(name, RED, text)
    if free < DISK_AMBER:
        return Check(name, AMBER, text)
    return Check(name, GREEN, text)


def _size(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"
