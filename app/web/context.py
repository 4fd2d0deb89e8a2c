"""What handlers use to reach the application and the current request."""

from __future__ import annotations

import base64
import binascii
import re

from connexion import context
from connexion.exceptions import BadRequestProblem
from flask import current_app

from app.state import AppState
from app.timeparse import parse_instant
from app.web.request_state import SCOPE_KEY, RequestState

# Operations declare application/problem+json for their errors too, so a handler
# names the content type of a successful answer: ``return body, 200, JSON``.
JSON = {"Content-Type": "application/json"}

# What encode_cursor writes after "v1:": a decimal id in ASCII digits (int() would also
# take spaces, underscores and other scripts' digits).
_CURSOR_ID = re.compile(r"-?[0-9]{1,19}")


def app_state() -> AppState:
    """The :class:`AppState` of the running app."""
    state: AppState = current_app.extensions["ninjahook"]
    return state


def current_request() -> RequestState:
    """The :class:`RequestState` of the request being handled."""
    state: RequestState = context.scope[SCOPE_KEY]
    return state


def decode_cursor(cursor: str | None, *, bits: int = 64) -> int | None:
    """The id a cursor stands for; 400 naming ``cursor`` when it is not one of ours.

    :param bits: the width of the signed integer column the id is compared with (32 for
        ``sa.Integer`` on PostgreSQL); an id outside it is no cursor of ours.
    """
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = text.partition(":")
        if version != "v1" or not _CURSOR_ID.fullmatch(value):
            raise ValueError
        last_id = int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequestProblem(detail="cursor: not a cursor returned by this API") from None
    # Outside the column's range the database driver fails (a 500 on SQLite, a 503 on
    # PostgreSQL) instead of a 400.
    if not -(2 ** (bits - 1)) <= last_id < 2 ** (bits - 1):
        raise BadRequestProblem(detail="cursor: not a cursor returned by this API")
    return last_id


def parse_time(value: str | None, name: str) -> float | None:
    """Epoch seconds from ISO 8601 or a number; 400 naming ``name`` otherwise."""
    if value is None or value == "":
        return None
    try:
        return parse_instant(value, allow_age=False)
    except ValueError as exc:
        raise BadRequestProblem(detail=f"{name}: {exc}") from None
