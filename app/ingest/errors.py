"""Telling "the database is unavailable" from "the database refused this content".

Only the first is answered 503 (retry later): a delivery whose content the database
refuses would be refused again on every retry, for good, while /readyz says 200.
"""

from __future__ import annotations

import sqlalchemy as sa

# SQLSTATE classes of a database that cannot serve now: connection exception (08),
# transaction rollback (40: serialization failure, deadlock), insufficient resources
# (53), operator intervention (57: shutdown, cancel), system error (58), internal (XX).
# Not here: data exception (22), integrity (23), program limit exceeded (54, e.g. an
# index row too large), syntax or access (42): the statement, not the database.
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58", "XX"})
_UNAVAILABLE_SQLSTATES = frozenset({"55P03", "55006"})  # lock not available, object in use
# SQLite result codes (extended codes add a suffix) of a database that cannot serve now.
_UNAVAILABLE_SQLITE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_PROTOCOL",
    "SQLITE_NOMEM",
    "SQLITE_INTERRUPT",
)


# PostgreSQL rolled the transaction back to break a deadlock (40P01) or a serialization
# conflict (40001): nothing was written, and running it again normally succeeds.
_RETRYABLE_SQLSTATES = ("40P01", "40001")


def transaction_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a deadlock or serialization failure that a retry of the whole
    transaction resolves (concurrent deliveries of one id can lock an alert and the
    activity in opposite orders)."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot serve now (so a retry may succeed),
    rather than that it refused what one statement carried."""
    if isinstance(exc, sa.exc.TimeoutError | sa.exc.DisconnectionError):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        return sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in _UNAVAILABLE_SQLSTATES
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str) and name:
        return name.startswith(_UNAVAILABLE_SQLITE)
    # No code (e.g. the connection could not be made at all): the driver's class decides.
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
