"""Error handlers: every error leaves as application/problem+json, mapped here once."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from connexion import FlaskApp
from connexion.exceptions import BadRequestProblem, ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.problem import problem

from app.ingest.group_commit import IngestShuttingDown
from app.web.request_state import SCOPE_KEY, RequestState

log = logging.getLogger(__name__)


def storage_unavailable() -> ConnexionResponse:
    """503 with Retry-After: the sender should try again."""
    return problem(
        status=503,
        title="Service Unavailable",
        detail="the database is unavailable; nothing was stored, retry later",
        headers={"Retry-After": "5"},
    )


def bad_request(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """400, naming the field of a delivery that failed validation (already kept as a
    rejected delivery by the validator)."""
    assert isinstance(exc, BadRequestProblem)
    state: RequestState | None = request.scope.get(SCOPE_KEY)
    ext: dict[str, str] = {}
    if state is not None and state.rejection is not None and state.rejection.field:
        ext["field"] = state.rejection.field
    return problem(
        status=400,
        title="Bad Request",
        detail=exc.detail,
        type=exc.type,
        ext=ext or None,
    )


def database_error(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """Any database failure: 503, never a 2xx and never a 4xx."""
    log.error("database error: %s: %s", exc.__class__.__name__, str(exc).splitlines()[0][:200])
    return storage_unavailable()


def shutting_down(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """A delivery that reached ingest after it stopped: 503, so that it is retried."""
    log.warning("%s", exc)
    return storage_unavailable()


def recursion_error(_request: ConnexionRequest, _exc: Exception) -> ConnexionResponse:
    """Pathologically nested input found outside the body validator."""
    return problem(status=400, title="Bad Request", detail="the input is nested too deeply")


def register_error_handlers(app: FlaskApp) -> None:
    """Map exceptions to problem responses (once, for the whole app)."""
    app.add_error_handler(BadRequestProblem, bad_request)
    app.add_error_handler(sa.exc.SQLAlchemyError, database_error)
    app.add_error_handler(RecursionError, recursion_error)
    app.add_error_handler(IngestShuttingDown, shutting_down)


__all__ = ["ProblemException", "register_error_handlers", "storage_unavailable"]
