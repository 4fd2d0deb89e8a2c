"""The application factory. Nothing is built at import time."""

from __future__ import annotations

import gc
import importlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import flask
from connexion import FlaskApp
from connexion.jsonifier import Jsonifier
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.validators import FormDataValidator

from app.background import PeriodicTask, Scheduler
from app.config import Config, load_config
from app.ingest.group_commit import stop_committer
from app.logs import install_redaction
from app.metrics.service import IngestMetricsMiddleware
from app.spec import SPEC_PATH
from app.state import AppState
from app.storage.db import Database, normalize_url
from app.web.auth import instance_token, load_or_create_token
from app.web.connexion_tuning import load_specification, tune_app
from app.web.middleware import (
    BodyLimitMiddleware,
    BodyTimeoutMiddleware,
    HeaderLimitMiddleware,
    RequestStateMiddleware,
)
from app.web.problems import register_error_handlers
from app.web.validation import DeliveryBodyValidator, NamedParameterValidator

log = logging.getLogger(__name__)

# Modules that extend ingest and the server. Each has
# ``install(state: AppState) -> list[PeriodicTask]``: it may append ingest hooks
# to ``state.new_activity_hooks`` and returns the periodic tasks it needs.
EXTENSIONS: tuple[str, ...] = (
    "app.entities.service",
    "app.alerts.service",
    "app.retention.service",
    "app.notifications.outbox",
    "app.metrics.service",
)


def build_state(config: Config) -> AppState:
    """The database and everything else a request needs, from validated settings."""
    if not config.webhook_tokens:
        # Never serve ingest without a token: fall back to the instance folder's own.
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
    db = Database(
        normalize_url(config.database_url, config.instance),
        sqlite_synchronous=config.sqlite_synchronous,
        sqlite_writer_lock=config.sqlite_writer_lock,
    )
    return AppState(config=config, db=db)


def install_extensions(state: AppState) -> list[PeriodicTask]:
    """Let every extension module register its hooks; collect its periodic tasks."""
    tasks: list[PeriodicTask] = []
    for name in EXTENSIONS:
        install: Callable[[AppState], list[PeriodicTask]] = importlib.import_module(name).install
        tasks.extend(install(state))
    return tasks


def create_app(overrides: Mapping[str, Any] | None = None) -> FlaskApp:
    """Build the receiver: settings, database, Connexion app routed from webhook.yaml.

    :param overrides: settings by name (see :mod:`app.config`), over the environment.
        Two more keys are accepted: ``validate_responses`` (check every response
        against webhook.yaml, as the tests do) and ``run_background`` (start the
        periodic tasks in the lifespan; default from NINJAHOOK_BACKGROUND_TASKS).
    """
    overrides = dict(overrides or {})
    validate_responses = bool(overrides.pop("validate_responses", False))
    config = load_config(overrides)
    state = build_state(config)
    tasks = install_extensions(state)
    scheduler = Scheduler(state, tasks)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        install_redaction()
        if state.config.background_tasks:
            scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()
            # In-flight deliveries have been answered by now; store anything still queued.
            stop_committer(state)
            state.db.dispose()

    app = FlaskApp(
        __name__,
        specification_dir=str(SPEC_PATH.parent),
        lifespan=lifespan,
        # Connexion's FlaskApp default indents every JSON answer, which takes json's
        # pure-Python encoder (about twice the C encoder's cost per response); Flask's
        # provider (sorted keys, its date format) is kept.
        jsonifier=Jsonifier(flask.json),
    )
    app.add_api(
        load_specification(SPEC_PATH),
        validator_map={
            # Replaces Connexion's whole body map, so its form validators are named again
            # (without them a form's required fields and limits went unchecked).
            "body": {
                "application/json": DeliveryBodyValidator,
                "application/x-www-form-urlencoded": FormDataValidator,
            },
            "parameter": NamedParameterValidator,
        },
        validate_responses=validate_responses,
        pythonic_params=True,
        swagger_ui_options=SwaggerUIOptions(swagger_ui_path="/docs"),
    )
    app.add_middleware(
        RequestStateMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION, state=state
    )
    # Inside RequestStateMiddleware (it sees the request state) and outside the exception
    # layer (it sees the 401/400/413 answers that no handler makes).
    app.add_middleware(
        IngestMetricsMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION, state=state
    )
    app.add_middleware(
        BodyLimitMiddleware,
        position=MiddlewarePosition.BEFORE_SWAGGER,
        limit=config.max_body_bytes,
    )
    app.add_middleware(HeaderLimitMiddleware, position=MiddlewarePosition.BEFORE_SWAGGER)
    app.add_middleware(
        BodyTimeoutMiddleware,
        position=MiddlewarePosition.BEFORE_SWAGGER,
        seconds=config.body_timeout,
    )
    register_error_handlers(app)
    tune_app(app)
    app.app.extensions["ninjahook"] = state
    app.app.extensions["ninjahook.scheduler"] = scheduler
    return app


def settle_heap() -> None:
    """Take what a server process has built so far out of the garbage collector's view.

    Call once per server process, after :func:`create_app`. The app (the spec,
    Connexion's operations, SQLAlchemy's caches) lives as long as the process, yet
    every full collection walked it: about 60 ms, during which every delivery in
    flight waited (the p99 of ingest). Frozen, a full collection takes about 1 ms.
    """
    gc.collect()
    gc.freeze()
