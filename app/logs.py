"""Logging set-up, and the filter that keeps tokens out of every log line."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

_SECRET_QUERY_NAMES = frozenset({"token", "access_token", "api_key"})
# A query string, from "?" (or "%3F", a "?" the path carries encoded) to the next
# whitespace. Quotes are part of it: ``?token='T'`` sends the quotes as part of the value,
# and cutting a quoted log field short only redacts more.
_QUERY = re.compile(r"(\?|%3f)(\S*)", re.IGNORECASE)
_QUERY_PARTS = re.compile(r"([&;])")
# What a decoded query part may hide another parameter behind: an encoded "&", ";", "?".
_DECODED_SEPARATORS = re.compile(r"[&;?]")
_BEARER = re.compile(r"(bearer\s+)[^\s\"',]+", re.IGNORECASE)
# A secret parameter outside a query string (a form body, ``a&api_key=K`` in a message).
_LOOSE_PARAMETER = re.compile(
    r"(^|[&;\s])((?:" + "|".join(sorted(_SECRET_QUERY_NAMES)) + r")=)[^&;\s]+", re.IGNORECASE
)


def _decoded(text: str) -> str:
    """``text`` percent-decoded until it no longer changes (at most three times)."""
    for _ in range(3):
        decoded = unquote_plus(text)
        if decoded == text:
            break
        text = decoded
    return text


def _is_secret_name(name: str) -> bool:
    return _decoded(name).strip().strip("'\"").lower() in _SECRET_QUERY_NAMES


def _holds_secret(part: str) -> bool:
    """Whether a query part, decoded, assigns a secret name anywhere: ``token=T``,
    ``%74oken=T``, ``token%3DT`` (a name the server does not split, but the token is in
    it), ``a=x%26token=T``."""
    for piece in _DECODED_SEPARATORS.split(_decoded(part)):
        name, equals, _value = piece.partition("=")
        if equals and _is_secret_name(name):
            return True
    return False


def _redact_query(match: re.Match[str]) -> str:
    parts = _QUERY_PARTS.split(match.group(2))
    for index, part in enumerate(parts):
        if index % 2 or not _holds_secret(part):
            continue  # a separator, or a part without a secret
        name, equals, _value = part.partition("=")
        parts[index] = f"{name}=[REDACTED]" if equals else "[REDACTED]"
    return match.group(1) + "".join(parts)


# Both patterns need a "=" (perhaps encoded, so a "%") or the word "bearer": most log
# arguments (a client address, a method, a plain path, a status) have none of them and
# skip both substitutions.
_MAY_HOLD_SECRET = re.compile(r"[=%]|bearer", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with query-string tokens and bearer tokens replaced by ``[REDACTED]``.

    Query parameters are split on ``&`` and ``;`` and compared decoded, so every form a
    sender may try (``?a=1;token=T``, ``?token%3DT``, ``?%74oken=T``, ``?token='T'``)
    is redacted whether or not the server accepted it.
    """
    if _MAY_HOLD_SECRET.search(text) is None:
        return text
    text = _QUERY.sub(_redact_query, text)
    return _LOOSE_PARAMETER.sub(r"\1\2[REDACTED]", _BEARER.sub(r"\1[REDACTED]", text))


_PLAIN_TYPES = (int, float, bool, type(None), bytes)


def _redact_arg(arg: Any) -> Any:
    """A log argument with any token removed. A string is redacted in place; any other
    object (an exception, a dict of headers) is kept as it is unless its ``str`` or
    ``repr`` holds a token, in which case the redacted text takes its place."""
    if isinstance(arg, str):
        return redact(arg)
    if isinstance(arg, _PLAIN_TYPES):
        return arg
    try:
        texts = (str(arg), repr(arg))
    except Exception:
        return arg
    for text in texts:
        redacted = redact(text)
        if redacted != text:
            return redacted
    return arg


def redact_record(record: logging.LogRecord) -> None:
    """Remove tokens from a record's message, arguments, exception and stack text."""
    if isinstance(record.args, tuple) and record.args:
        record.args = tuple(_redact_arg(a) for a in record.args)
    elif isinstance(record.args, dict) and record.args:
        record.args = {k: _redact_arg(v) for k, v in record.args.items()}
    if record.args:
        # The arguments keep their shape (uvicorn's access formatter unpacks them), unless
        # the message only holds a token once formatted (a "?token=%s" message).
        try:
            message = record.getMessage()
        except Exception:
            message = None
        if message is not None and redact(message) != message:
            record.msg, record.args = redact(message), ()
    else:
        record.msg = _redact_arg(record.msg)
    if record.exc_info and not record.exc_text:
        # Formatted here (as Formatter.format would) so the traceback's text is redacted;
        # formatters use exc_text when it is set.
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactTokens(logging.Filter):
    """Rewrites a record's message and arguments so no token reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access", "uvicorn.error", "gunicorn.error")


def _redacting_factory(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        redact_record(record)
        return record

    factory.redacts_tokens = True  # type: ignore[attr-defined]
    return factory


def install_redaction() -> None:
    """Redact every log record where it is made, whichever logger makes it (a filter on a
    logger does not see its children's records, nor a handler added later), and attach
    :class:`RedactTokens` to the access and error loggers and their handlers as well."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "redacts_tokens", False):
        logging.setLogRecordFactory(_redacting_factory(current))
    flt = RedactTokens()
    for name in (*ACCESS_LOGGERS, "", "ninjahook", "app", "connexion"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(flt)
        for handler in logger.handlers:
            if not any(isinstance(f, RedactTokens) for f in handler.filters):
                handler.addFilter(flt)
    # Python's last-resort handler (a logger without handlers, WARNING and up).
    if logging.lastResort is not None and not any(
        isinstance(f, RedactTokens) for f in logging.lastResort.filters
    ):
        logging.lastResort.addFilter(flt)


def configure_logging(level: str = "INFO") -> None:
    """Plain stderr logging at ``level`` with token redaction."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Alembic announces every plugin it loads at INFO; that is noise at every start.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    install_redaction()
