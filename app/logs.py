"""Logging set-up, and the filter that keeps tokens out of every log line."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

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


# --- formats and set-up ----------------------------------------------------------------
#
# One set-up for every process: `ninjahook serve` and every other command call
# configure_logging(); gunicorn (app/gunicorn_conf.py) passes logging_dict() as its
# logconfig_dict, so the master, the workers, gunicorn's own error and access loggers and
# the application's loggers all write through one handler and one formatter.

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
# Libraries that announce routine work at INFO (every HTTP request, every plugin).
QUIET_LOGGERS = {
    "alembic.runtime.plugins": "WARNING",
    "httpx": "WARNING",
    "httpcore": "WARNING",
}
# What uvicorn adds to its records for its own coloured console, which is not ours.
_DROPPED_FIELDS = frozenset({"color_message"})

# Fields of the request being served (method, path, activity id...), set by the access
# log middleware (app.web.access_log) and added to every JSON line logged while it runs.
_request_fields: ContextVar[dict[str, Any] | None] = ContextVar(
    "ninjahook_request_fields", default=None
)


@contextmanager
def request_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Bind ``fields`` to every log line of the request served inside the block; yields
    the mutable mapping, which :func:`annotate_request` adds to."""
    bound = dict(fields)
    token = _request_fields.set(bound)
    try:
        yield bound
    finally:
        _request_fields.reset(token)


def annotate_request(**fields: Any) -> None:
    """Add ``fields`` (e.g. ``activity_id``) to the current request's log fields, if any."""
    bound = _request_fields.get()
    if bound is not None:
        bound.update(fields)


def _iso_time(created: float) -> str:
    """A record's time as ISO 8601 in UTC with milliseconds: ``2025-01-31T12:00:00.123Z``."""
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``time [pid] LEVEL logger: message``, the time in ISO 8601 (UTC)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_time(record.created)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    return value


class JsonFormatter(_JsonFormatter):
    """One JSON object per line (python-json-logger): ``time``, ``level``, ``logger``,
    ``pid``, ``message``, the current request's fields and any ``extra`` fields.

    Every string value is redacted again here: the record factory redacts a record's
    message and arguments, and this covers ``extra`` fields and exception text too.
    """

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "process": "pid",
            },
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_time(record.created)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        bound = _request_fields.get()
        if bound:
            for key, value in bound.items():
                log_data.setdefault(key, value)
        for key in _DROPPED_FIELDS:
            log_data.pop(key, None)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: _redact_value(value) for key, value in log_data.items()}


def make_formatter(log_format: str = "text") -> logging.Formatter:
    """The formatter for ``NINJAHOOK_LOG_FORMAT`` (``text`` or ``json``)."""
    if log_format == "json":
        return JsonFormatter()
    return TextFormatter()


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as Python's
    last-resort handler does), so a replaced stderr (click's test runner) is followed."""

    ninjahook = True

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def logging_dict(level: str = "INFO", log_format: str = "text") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping: the root logger and gunicorn's error and
    access loggers through one :class:`StderrHandler` with :func:`make_formatter`.

    gunicorn's error logger keeps the level gunicorn gives it (``--log-level``); the
    application's loggers follow ``level`` (NINJAHOOK_LOG_LEVEL).
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ninjahook": {"()": make_formatter, "log_format": log_format}},
        "handlers": {"stderr": {"class": "app.logs.StderrHandler", "formatter": "ninjahook"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's worker gives uvicorn.error and uvicorn.access these loggers' handlers.
            "gunicorn.error": {"handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            **{name: {"level": quiet} for name, quiet in QUIET_LOGGERS.items()},
        },
    }


def configure_logging(
    level: str = "INFO", log_format: str = "text", *, force: bool = False
) -> None:
    """Log to stderr at ``level`` in ``log_format`` (``text`` or ``json``), with token
    redaction. Calling it again replaces the handler it added before.

    As :func:`logging.basicConfig`, it leaves alone a root logger that something else
    has given a handler (a program that embeds ninjahook, pytest's log capture), and only
    installs the redaction, unless ``force``.
    """
    root = logging.getLogger()
    if not force and any(not getattr(h, "ninjahook", False) for h in root.handlers):
        install_redaction()
        return
    for handler in list(root.handlers):
        if getattr(handler, "ninjahook", False):
            root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(make_formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet)
    install_redaction()
