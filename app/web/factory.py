"""The application factory. Nothing is built at import time."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import flask
from connexion import FlaskApp
from connexion.datastructures import MediaTypeDict
from connexion.jsonifier import Jsonifier
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.validators import VALIDATOR_MAP, FormDataValidator

from app.background import Scheduler
from app.config import load_config
from app.ingest.group_commit import stop_committer
from app.logs import install_redaction
from app.services import build_state, periodic_tasks
from app.spec import SPEC_PATH
from app.tracing import asgi_middleware
from app.tracing import configure as configure_tracing
from app.web.access_log import AccessLogMiddleware
from app.web.connexion_tuning import load_specification, tune_app
from app.web.metrics_middleware import IngestMetricsMiddleware
from app.web.middleware import (
    BodyLimitMiddleware,
    BodyTimeoutMiddleware,
    ContentTypeMiddleware,
    DashboardHeadersMiddleware,
    HeaderLimitMiddleware,
    PathMiddleware,
    RequestStateMiddleware,
)
from app.web.problems import register_error_handlers
from app.web.streaming import DisconnectMiddleware, JSONLinesResponseValidator
from app.web.validation import DeliveryBodyValidator, NamedParameterValidator

log = logging.getLogger(__name__)


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
    # Before the database is built: its engine is traced when tracing is on (app.tracing).
    configure_tracing()
    state = build_state(config)
    scheduler = Scheduler(state, periodic_tasks(state))

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
            # Connexion's response map plus JSON Lines, checked line by line as it streams
            # (its "*/*json" validator would hold a whole export to parse it as one value).
            "response": MediaTypeDict(
                {
                    **VALIDATOR_MAP["response"],
                    "application/x-ndjson": JSONLinesResponseValidator,
                }
            ),
        },
        validate_responses=validate_responses,
        pythonic_params=True,
        swagger_ui_options=SwaggerUIOptions(swagger_ui_path="/docs"),
    )
    # Outermost of ours: each request's server span, when tracing is on (OTEL_*).
    request_spans = asgi_middleware()
    if request_spans is not None:
        app.add_middleware(request_spans, position=MiddlewarePosition.BEFORE_EXCEPTION)
    # The access log sees the path as it was sent, and times the whole answer.
    app.add_middleware(AccessLogMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)
    # Outermost of the rest: every later layer (and the routing) sees the collapsed path.
    app.add_middleware(PathMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(DashboardHeadersMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)
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
    # Inside the header limit, outside everything of Connexion's that reads Content-Type.
    app.add_middleware(ContentTypeMiddleware, position=MiddlewarePosition.BEFORE_SWAGGER)
    app.add_middleware(
        BodyTimeoutMiddleware,
        position=MiddlewarePosition.BEFORE_SWAGGER,
        seconds=config.body_timeout,
    )
    # Streamed answers stop reading the database when their client goes away.
    app.add_middleware(
        DisconnectMiddleware,
        position=MiddlewarePosition.BEFORE_SWAGGER,
        paths=("/activities/export",),
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
