"""Logging set-up, and the filter that keeps tokens out of every log line."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

_SECRET_QUERY_NAMES = frozenset({"token", "access_token", "api_key"})
# Every query parameter: its name is compared decoded, because the server decodes
# "?%74oken=" to "token" and accepts it, while access logs print the raw query.
_QUERY_PARAM = re.compile(r"([?&])([^=&\s\"'#?]+)=([^&\s\"'#]*)")
_BEARER = re.compile(r"(bearer\s+)[^\s\"',]+", re.IGNORECASE)


def _redact_query_param(match: re.Match[str]) -> str:
    if unquote_plus(match.group(2)).lower() in _SECRET_QUERY_NAMES:
        return f"{match.group(1)}{match.group(2)}=[REDACTED]"
    return match.group(0)


# Both patterns need a "=" or the word "bearer": most log arguments (a client address,
# a method, a plain path, a status) have neither and skip both substitutions.
_MAY_HOLD_SECRET = re.compile(r"=|bearer", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with query-string tokens and bearer tokens replaced by ``[REDACTED]``."""
    if _MAY_HOLD_SECRET.search(text) is None:
        return text
    return _BEARER.sub(r"\1[REDACTED]", _QUERY_PARAM.sub(_redact_query_param, text))


def _redact_arg(arg: Any) -> Any:
    return redact(arg) if isinstance(arg, str) else arg


class RedactTokens(logging.Filter):
    """Rewrites a record's message and arguments so no token reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access", "uvicorn.error", "gunicorn.error")


def install_redaction() -> None:
    """Attach :class:`RedactTokens` to the access and error loggers and their handlers."""
    flt = RedactTokens()
    for name in (*ACCESS_LOGGERS, "", "ninjahook", "app", "connexion"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(flt)
        for handler in logger.handlers:
            if not any(isinstance(f, RedactTokens) for f in handler.filters):
                handler.addFilter(flt)


def configure_logging(level: str = "INFO") -> None:
    """Plain stderr logging at ``level`` with token redaction."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Alembic announces every plugin it loads at INFO; that is noise at every start.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    install_redaction()
