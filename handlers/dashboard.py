"""Handlers for the server-rendered dashboard."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from connexion import context
from flask import Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from app.silences import operator
from app.silences.service import SilenceError, expire_silence
from app.web import dashboard
from app.web.auth import SESSION_COOKIE, operator_label, token_matches
from app.web.context import app_state
from app.web.sessions import LOGIN_COOKIE, end_session, new_random, session_valid, start_session

HTML = "text/html; charset=utf-8"


def _logged_in() -> bool:
    # webhook.yaml's anonymous `{}` alternative lets these pages answer without a
    # session; a valid cookie leaves its token_info behind.
    return bool(context.context.get("token_info"))


def _html(text: str, status: int = 200) -> Response:
    response = Response(text, status=status, content_type=HTML)
    response.headers["Cache-Control"] = "no-store"
    return response


def _set_cookie(response: BaseResponse, name: str, value: str) -> None:
    response.set_cookie(
        name, value, httponly=True, samesite="Strict", secure=request.is_secure, path="/"
    )


def _form_allowed(bound_to: str, csrf: str) -> bool:
    """The form token matches the cookie it is bound to, and the post is same-origin."""
    return bool(bound_to) and dashboard.form_allowed(
        bound_to,
        csrf,
        fetch_site=request.headers.get("Sec-Fetch-Site"),
        origin=request.headers.get("Origin"),
        host=request.headers.get("Host"),
    )


def _logout_token() -> str:
    """The logout form's token for this page: bound to the session cookie (empty
    without one, and then no logout form is shown)."""
    session = request.cookies.get(SESSION_COOKIE, "")
    return dashboard.form_token(session) if session else ""


def _login_form(error: str | None = None, status: int = 200) -> Response:
    """The login form with a form token bound to the pre-session cookie (set when the
    browser has none yet)."""
    pre_session = request.cookies.get(LOGIN_COOKIE, "")
    fresh = not pre_session or len(pre_session) > 100
    if fresh:
        pre_session = new_random()
    response = _html(dashboard.render_login(error, csrf=dashboard.form_token(pre_session)), status)
    if fresh:
        _set_cookie(response, LOGIN_COOKIE, pre_session)
    return response


def index(
    organization_id: int | None = None,
    severity: str | None = None,
    q: str | None = None,
    page: int = 1,
) -> BaseResponse:
    """The dashboard, or the login form without a session."""
    if not _logged_in():
        return _login_form()
    filters = dashboard.Filters(
        organization_id=organization_id, severity=severity or None, text=q, page=page
    )
    return _html(dashboard.render_index(app_state(), filters, csrf=_logout_token()))


def login(body: dict[str, Any]) -> BaseResponse:
    """Check the form token and the read token; start a session (a random id, stored
    hashed) and set its cookie."""
    if not _form_allowed(request.cookies.get(LOGIN_COOKIE, ""), str(body.get("csrf") or "")):
        return _html(dashboard.render_forbidden(), 403)
    token = str(body.get("token") or "")
    state = app_state()
    # An operator token logs in too: its session may act, under the token's label.
    label = operator_label(token, state.config.operator_tokens) if token else None
    if not token or not (label or token_matches(token, state.config.api_tokens)):
        return _login_form("That is not a read token.", 401)
    # A session the browser already had is replaced, never reused (no session fixation).
    end_session(state, request.cookies.get(SESSION_COOKIE, ""))
    response = redirect("/", code=303)
    session = start_session(state, role="operator", actor=label) if label else start_session(state)
    _set_cookie(response, SESSION_COOKIE, session)
    response.delete_cookie(LOGIN_COOKIE, path="/", httponly=True, samesite="Strict")
    return response


def logout(body: dict[str, Any] | None = None) -> BaseResponse:
    """End the session server-side (the form token and this origin are required) and
    drop its cookie."""
    state = app_state()
    session = request.cookies.get(SESSION_COOKIE, "")
    if session and session_valid(state, session):
        if not _form_allowed(session, str((body or {}).get("csrf") or "")):
            return _html(dashboard.render_forbidden(), 403)
        end_session(state, session)
    response = redirect("/", code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return response


def live(
    organization_id: int | None = None,
    severity: str | None = None,
    q: str | None = None,
    page: int = 1,
) -> Response:
    """The live fragment the dashboard polls."""
    filters = dashboard.Filters(
        organization_id=organization_id, severity=severity or None, text=q, page=page
    )
    return _html(dashboard.render_live(app_state(), filters))


def activity_page(id_: int) -> BaseResponse:
    """One activity with its payload pretty-printed."""
    if not _logged_in():
        return redirect("/", code=303)
    csrf = _logout_token()
    page = dashboard.render_activity(app_state(), id_, csrf=csrf)
    if page is None:
        what = f"No activity with id {id_} is stored."
        return _html(dashboard.render_not_found(what, csrf=csrf), 404)
    return _html(page)


def alert_page(key: str) -> BaseResponse:
    """One alert with its history."""
    if not _logged_in():
        return redirect("/", code=303)
    csrf = _logout_token()
    page = dashboard.render_alert(
        app_state(), key, csrf=csrf, operator_session=_operator() is not None
    )
    if page is None:
        return _html(dashboard.render_not_found(f"No alert with key {key!r}.", csrf=csrf), 404)
    return _html(page)


def _operator() -> str | None:
    """The operator label of this request's session (None for a read session)."""
    info = context.context.get("token_info") or {}
    return str(info["sub"]) if info.get("scope") == "operator" else None


def alert_action(key: str, body: dict[str, Any]) -> BaseResponse:
    """An operator action from the alert's page (webhook.yaml requires an operator's
    session); back to the page, or the page with what went wrong."""
    csrf = _logout_token()
    if not _form_allowed(request.cookies.get(SESSION_COOKIE, ""), str(body["csrf"])):
        return _html(dashboard.render_forbidden(csrf=csrf), 403)
    state, actor, action = app_state(), _operator() or "dashboard", body["action"]
    done: object
    try:
        if action == "silence":
            done = operator.silence_alert(
                state, key, actor, str(body.get("duration") or ""), str(body.get("comment") or "")
            )
        elif action == "expire":
            detail = operator.alert_with_actions(state, key)
            done = detail and expire_silence(
                state, int(body.get("silence") or 0), actor, action_alert_key=detail["key"]
            )
        elif action == "acknowledge":
            done = operator.acknowledge_alert(state, key, actor)
        else:
            done = operator.reset_alert(state, key, actor)
    except (SilenceError, operator.OperatorActionFailed) as exc:
        page = dashboard.render_alert(
            state, key, csrf=csrf, operator_session=True, notice=f"Not done: {exc}"
        )
        if page is not None:
            return _html(page, 409)
        done = None
    if done is None:
        return _html(dashboard.render_not_found(f"No alert with key {key!r}.", csrf=csrf), 404)
    return redirect(f"/ui/alerts/{quote(key, safe='~')}", code=303)


def dead_letters_page(before: int | None = None, retried: int | None = None) -> BaseResponse:
    """The dead letters with a "retry" button each."""
    if not _logged_in():
        return redirect("/", code=303)
    session = request.cookies.get(SESSION_COOKIE, "")
    return _html(
        dashboard.render_dead_letters(
            app_state(),
            session=session,
            before=before,
            retried=retried,
            operator_session=_operator() is not None,
        )
    )


def retry_dead_letter(body: dict[str, Any]) -> BaseResponse:
    """Queue one dead letter again (the session cookie is required by webhook.yaml)."""
    if not _form_allowed(request.cookies.get(SESSION_COOKIE, ""), str(body["csrf"])):
        return _html(dashboard.render_forbidden(csrf=_logout_token()), 403)
    state, actor, uid = app_state(), _operator(), str(body["delivery"])
    if actor is None:
        # Read tokens see; retrying is an operator's action (issue 14), logged by label.
        reason = "Retrying a dead letter takes a session opened with an operator token."
        return _html(dashboard.render_forbidden(csrf=_logout_token(), reason=reason), 403)
    retried = operator.retry_delivery(state, uid, actor)
    if not retried:
        what = f"No dead letter with id {body['delivery']!r}; it may have been retried already."
        return _html(dashboard.render_not_found(what, csrf=_logout_token()), 404)
    return redirect("/ui/dead-letters?retried=1", code=303)


def static_file(name: str) -> Response:
    """The stylesheet or the script."""
    content, content_type = dashboard.static_file(name)
    response = Response(content, status=200, content_type=content_type)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
