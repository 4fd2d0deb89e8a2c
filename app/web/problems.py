"""Error handlers: every error leaves as application/problem+json, mapped here once."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from connexion import FlaskApp
from connexion.exceptions import BadRequestProblem, ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.problem import problem

from app.ingest.errors import database_unavailable
from app.ingest.group_commit import IngestShuttingDown
from app.ingest.rejected import Rejection, keep_rejected
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


def _first_line(exc: Exception) -> str:
    lines = str(exc).splitlines()
    return lines[0][:200] if lines else ""


def database_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """A database error: 503 only when the database is unavailable
    (:func:`app.ingest.errors.database_unavailable`), never a 2xx.

    An error the database raised about what one statement carried (a data exception, a
    constraint, a program limit) would come back on every retry, so it is not a 503: a
    delivery it happened to is kept as a rejected delivery and answered 400; any other
    request gets a 500.
    """
    if database_unavailable(exc):
        log.error("database error: %s: %s", exc.__class__.__name__, _first_line(exc))
        return storage_unavailable()
    state: RequestState | None = request.scope.get(SCOPE_KEY)
    if state is not None and state.raw_body is not None:
        detail = (
            "the database refused this delivery's content "
            f"({exc.__class__.__name__}); it was kept as a rejected delivery"
        )
        rejection = Rejection(
            reason=f"{detail}: {_first_line(exc)}",
            field=None,
            body=state.raw_body,
            body_bytes=len(state.raw_body),
            truncated=False,
            content_type=request.headers.get("content-type"),
        )
        try:
            rejected_id = keep_rejected(state.app, rejection)
        except sa.exc.SQLAlchemyError as keep_exc:
            log.error("could not keep a refused delivery: %s", keep_exc.__class__.__name__)
            return storage_unavailable()
        state.rejection = rejection
        log.error("rejected delivery %d: %s", rejected_id, rejection.reason, exc_info=exc)
        return problem(status=400, title="Bad Request", detail=detail)
    log.error("database error: %s: %s", exc.__class__.__name__, _first_line(exc), exc_info=exc)
    return problem(
        status=500,
        title="Internal Server Error",
        detail="the database refused the request (see the server log)",
    )


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
