"""Where the app is wired: its services, the ingest pipeline and the periodic tasks.

Everything an app holds is built here, in one visible place, from validated
settings: the web factory (:func:`app.web.factory.create_app`) and the CLI both
start from :func:`build_state`.
"""

from __future__ import annotations

import logging

from app.alerts.service import apply_new_activity, lock_batch_alerts
from app.background import PeriodicTask
from app.config import Config, check_instance_folder, check_token_roles
from app.entities.service import CacheNeeds, WrittenEntities, cache_updater
from app.ingest.pipeline import Pipeline, Stage
from app.metrics.service import CounterBuffer
from app.ninjaone.client import credentials_configured
from app.ninjaone.refresh import CacheRefresher
from app.ninjaone.schedule import backfill_schedule, sync_schedule
from app.ninjaone.sync import BACKFILL_TASK, SYNC_TASK, run_backfill, run_sync
from app.notifications.outbox import (
    enqueue_stage,
    load_configured_routes,
    send_due,
    sends_in_process,
)
from app.notifications.routes import RoutesConfig
from app.retention.service import DAY, prune_task
from app.silences.service import Suppressor
from app.state import AppState
from app.storage.db import Database, normalize_url
from app.tokens import instance_token, load_or_create_token

log = logging.getLogger(__name__)


def build_state(
    config: Config, db: Database | None = None, *, refresh_cache: bool = True
) -> AppState:
    """The database (``db``, or one opened from the settings) and every service a request
    or a command needs. ``refresh_cache``: with NinjaOne credentials, keep the entity
    cache current in the background (:mod:`app.ninjaone.refresh`); a server does, a
    one-shot command does not.

    :raises app.config.ConfigError: a setting or the routes file is invalid.
    """
    check_instance_folder(config)
    config = with_instance_tokens(config)
    # Routes first: an invalid routes file fails here, before the database is opened.
    routes = load_configured_routes(config)
    if db is None:
        db = Database(
            normalize_url(config.database_url, config.instance),
            sqlite_synchronous=config.sqlite_synchronous,
            sqlite_writer_lock=config.sqlite_writer_lock,
        )
    # With NinjaOne credentials the cache keeps itself current: the entities stage notes
    # misses and change events, and a background thread fetches them after the commit.
    needs = CacheNeeds() if refresh_cache and credentials_configured(config) else None
    suppress = Suppressor()
    state = AppState(
        config=config,
        db=db,
        pipeline=build_pipeline(db, routes, needs, suppress=suppress),
        routes=routes,
        metrics=CounterBuffer(db),
        suppress=suppress,
    )
    if needs is not None:
        needs.attach(db.engine)
        CacheRefresher(state, needs)  # starts on the first note; needs.on_queued keeps it
    return state


def check_startup(config: Config) -> RoutesConfig:
    """What a server checks before it starts, beyond each setting's own value: the
    instance folder is writable and the routes file is valid. Returns the routes.

    :raises app.config.ConfigError: naming the setting and the cause.
    """
    check_instance_folder(config)
    return load_configured_routes(config)


def with_instance_tokens(config: Config) -> Config:
    """``config`` with the instance folder's generated tokens where none are configured.

    Ingest is never served without a webhook token: one is generated when needed.
    """
    if not config.webhook_tokens:
        token, created = load_or_create_token(config.instance, "webhook")
        if created:
            log.warning(
                "no NINJAHOOK_WEBHOOK_TOKENS set: generated a webhook token in %s",
                config.instance / "webhook-token",
            )
        config = config.replace(webhook_tokens=(token,))
    if not config.api_tokens:
        api_token = instance_token(config.instance, "api")
        if api_token:
            config = config.replace(api_tokens=(api_token,))
    # Again with the generated tokens: a configured read token may equal a generated
    # webhook token (or the other way round).
    check_token_roles(config)
    return config


def build_pipeline(
    db: Database,
    routes: RoutesConfig,
    needs: CacheNeeds | None = None,
    *,
    suppress: Suppressor | None = None,
) -> Pipeline:
    """The stages that run inside the ingest transaction for each new activity, in order.

    1. ``entities``: the entity cache takes the activity's expanded device,
       organization and location. First, because the stages after it read names
       and ids from the cache in the same transaction.
    2. ``alerts``: a CONDITION activity moves its alert (triggered, reset).
    3. ``notifications``: what the routes say goes into the outbox. Last: a route
       that matches on organization, device or node class reads the cache that
       stage 1 has just written, so a device's first activity routes by its own
       expanded data. Present only when there are routes.

    With ``needs`` (NinjaOne credentials are set), stage 1 also notes a device it has
    not seen and SYSTEM change events; :mod:`app.ninjaone.refresh` fetches them in the
    background once the delivery has committed (a set lookup on the ingest path).
    """
    # What this process committed to the cache lately, to skip rewriting it; kept in
    # step with commits and rollbacks through the engine's events.
    written = WrittenEntities()
    written.attach(db.engine)
    stages = [
        Stage("entities", cache_updater(written, needs)),
        Stage("alerts", apply_new_activity, prepare=lock_batch_alerts),
    ]
    if routes.routes:
        stages.append(
            Stage("notifications", enqueue_stage(routes, suppress=suppress or Suppressor()))
        )
    return Pipeline(stages)


def periodic_tasks(state: AppState) -> list[PeriodicTask]:
    """What the server runs on a schedule, each in one process at a time."""
    config = state.config
    tasks: list[PeriodicTask] = []
    backfill = backfill_schedule(config)
    if backfill.active:
        tasks.append(PeriodicTask(BACKFILL_TASK, float(backfill.interval), run_backfill))
    elif backfill.misconfigured:  # only when the interval was set explicitly
        log.warning(
            "NINJAHOOK_BACKFILL_INTERVAL is set but NINJAONE_CLIENT_ID/"
            "NINJAONE_CLIENT_SECRET are not: periodic backfill is off"
        )
    sync = sync_schedule(config)
    if sync.active:
        tasks.append(PeriodicTask(SYNC_TASK, float(sync.interval), run_sync))
    if config.retention_days > 0:
        tasks.append(PeriodicTask("retention.prune", DAY, prune_task))
    if sends_in_process(state):
        tasks.append(PeriodicTask("delivery-worker", 1.0, send_due))
    return tasks
