"""Handlers for the server-rendered dashboard."""

from __future__ import annotations

from typing import Any

from connexion import context
from flask import Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from app.web import dashboard
from app.web.auth import SESSION_COOKIE, session_value, token_matches
from app.web.context import app_state

HTML = "text/html; charset=utf-8"


def _logged_in() -> bool:
    # webhook.yaml's anonymous `{}` alternative lets these pages answer without a
    # session; a valid cookie leaves its token_info behind.
    return bool(context.context.get("token_info"))


def _html(text: str, status: int = 200) -> Response:
    response = Response(text, status=status, content_type=HTML)
    response.headers["Cache-Control"] = "no-store"
    return response


def index(
    organization_id: int | None = None, severity: str | None = None, q: str | None = None
) -> BaseResponse:
    """The dashboard, or the login form without a session."""
    if not _logged_in():
        return _html(dashboard.render_login())
    filters = dashboard.Filters(organization_id=organization_id, severity=severity or None, text=q)
    return _html(dashboard.render_index(app_state(), filters))


def login(body: dict[str, Any]) -> BaseResponse:
    """Check the read token; set the session cookie derived from it."""
    token = str(body.get("token") or "")
    if not token or not token_matches(token, app_state().config.api_tokens):
        return _html(dashboard.render_login("That is not a read token."), 401)
    response = redirect("/", code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_value(token),
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
    )
    return response


def logout() -> BaseResponse:
    """Drop the session cookie."""
    response = redirect("/", code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return response


def live(
    organization_id: int | None = None, severity: str | None = None, q: str | None = None
) -> Response:
    """The live fragment the dashboard polls."""
    filters = dashboard.Filters(organization_id=organization_id, severity=severity or None, text=q)
    return _html(dashboard.render_live(app_state(), filters))


def activity_page(id_: int) -> BaseResponse:
    """One activity with its payload pretty-printed."""
    if not _logged_in():
        return redirect("/", code=303)
    page = dashboard.render_activity(app_state(), id_)
    if page is None:
        return _html(dashboard.render_not_found(f"No activity with id {id_} is stored."), 404)
    return _html(page)


def alert_page(key: str) -> BaseResponse:
    """One alert with its history."""
    if not _logged_in():
        return redirect("/", code=303)
    page = dashboard.render_alert(app_state(), key)
    if page is None:
        return _html(dashboard.render_not_found(f"No alert with key {key!r}."), 404)
    return _html(page)


def dead_letters_page(before: int | None = None, retried: int | None = None) -> BaseResponse:
    """The dead letters with a "retry" button each."""
    if not _logged_in():
        return redirect("/", code=303)
    session = request.cookies.get(SESSION_COOKIE, "")
    return _html(
        dashboard.render_dead_letters(app_state(), session=session, before=before, retried=retried)
    )


def retry_dead_letter(body: dict[str, Any]) -> BaseResponse:
    """Queue one dead letter again (the session cookie is required by webhook.yaml)."""
    session = request.cookies.get(SESSION_COOKIE, "")
    allowed = dashboard.form_allowed(
        session,
        str(body["csrf"]),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
        origin=request.headers.get("Origin"),
        host=request.headers.get("Host"),
    )
    if not allowed:
        return _html(dashboard.render_forbidden(), 403)
    if not dashboard.retry_dead_letter(app_state(), str(body["delivery"])):
        what = f"No dead letter with id {body['delivery']!r}; it may have been retried already."
        return _html(dashboard.render_not_found(what), 404)
    return redirect("/ui/dead-letters?retried=1", code=303)


def static_file(name: str) -> Response:
    """The stylesheet or the script."""
    content, content_type = dashboard.static_file(name)
    response = Response(content, status=200, content_type=content_type)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
