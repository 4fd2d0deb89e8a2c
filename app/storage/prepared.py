"""Statements that every delivery runs, compiled once and executed on the DBAPI cursor.

SQLAlchemy Core spends about 30 µs of Python per ``Connection.execute`` (cache
lookup, parameter construction, execution context, result wrapper) around a
statement that SQLite runs in 5 to 15 µs. Ingest runs up to four of them per new
activity while it holds SQLite's single write lock, so that overhead bounds how
many deliveries per second the whole server can commit. A :class:`Prepared`
statement is still built with Core (so the SQL stays in this package and matches
the dialect), compiled once per dialect and set of parameter names, and then run
on the connection's own DBAPI cursor, inside the same transaction.

On PostgreSQL every statement is a round trip to the server, and a batch of
deliveries ran four of them per delivery, one after the other. Inside
:func:`pipelined`, prepared statements use psycopg's pipeline mode: a statement
that returns no rows is sent without waiting for its answer, and :meth:`Prepared.send`
sends one whose rows are read later. They travel to the server together with the
next statement whose rows are needed now, so a batch waits once per such statement
instead of once per statement. Any other statement on the connection (a Core
``execute``), a commit or a rollback first ends the pipeline and waits for every
answer, so it runs in the usual mode and sees everything sent before it. An error
in a statement sent ahead is raised by the next statement that waits (or by the end
of the pipeline), as the same wrapped exception; the transaction then fails as a
whole, as it would have a statement later.

What stays the same as ``Connection.execute``: the dialect's bind and result type
processors are applied, and a DBAPI error is raised as SQLAlchemy's wrapped
exception (``sqlalchemy.exc.OperationalError`` and so on), with the connection
invalidated when the error means it was lost, so the error handlers and the
connection pool see what they would have seen.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.types import TypeEngine

from app.tracing import statement_span

Processor = Callable[[Any], Any]

# Called with the SQL of every prepared statement run (SQLAlchemy's statement events do
# not see them); tests use it to count what ingest runs.
statement_observers: list[Callable[[str], None]] = []


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Parameter names in placeholder order (positional paramstyles), or None (named).
    order: tuple[str, ...] | None
    binds: tuple[tuple[str, str, Processor | None], ...]  # (param key, name in SQL, processor)
    constants: dict[str, Any]  # values written into the statement, by name in SQL
    columns: tuple[str, ...]
    column_types: tuple[TypeEngine[Any], ...]
    # Result processors need the driver's type codes: built from the first cursor.
    results: list[tuple[Processor | None, ...]]


class Prepared:
    """A Core statement run without Core's per-execution work.

    :param build: makes the statement for a dialect name; for an INSERT or UPDATE
        whose columns come from the parameters, it is compiled for the parameter
        names of each call (one compilation per distinct set of names).
    """

    def __init__(self, build: Callable[[str], ClauseElement]) -> None:
        self._build = build
        self._cache: dict[tuple[str, frozenset[str]], _Compiled] = {}
        self._lock = threading.Lock()

    def _compiled(self, dialect: Dialect, keys: frozenset[str]) -> _Compiled:
        cache_key = (dialect.name, keys)
        compiled = self._cache.get(cache_key)
        if compiled is not None:
            return compiled
        with self._lock:
            compiled = self._cache.get(cache_key)
            if compiled is None:
                compiled = _compile(self._build(dialect.name), dialect, keys)
                self._cache[cache_key] = compiled
        return compiled

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run the statement with ``params`` in ``conn``'s transaction; the rows it returns.

        Inside :func:`pipelined`, a statement that returns no rows is only sent (its
        errors are raised by a later statement); one that returns rows waits for them.

        :raises sqlalchemy.exc.DBAPIError: the database refused or failed.
        """
        pending = self.send(conn, params)
        if not pending.compiled.columns and pending.in_pipeline:
            return []  # sent ahead; its cursor is closed when the pipeline ends
        return pending.rows()

    def send(self, conn: Connection, params: Mapping[str, Any]) -> Pending:
        """Send the statement; :meth:`Pending.rows` reads its rows.

        Inside :func:`pipelined` nothing is waited for until the rows are read (or the
        pipeline ends); otherwise the statement has run when this returns.

        :raises sqlalchemy.exc.DBAPIError: the database refused or failed.
        """
        dialect = conn.dialect
        compiled = self._compiled(dialect, frozenset(params))
        values = {
            sql_name: (processor(params[key]) if processor else params[key])
            for key, sql_name, processor in compiled.binds
        }
        values.update(compiled.constants)
        arguments: Sequence[Any] | Mapping[str, Any] = (
            values if compiled.order is None else [values[name] for name in compiled.order]
        )
        dbapi_connection = conn.connection.dbapi_connection
        assert dbapi_connection is not None
        pipeline: _Pipeline | None = conn.info.get(_PIPELINE)
        if pipeline is not None:
            pipeline.open(conn)
        for observe in statement_observers:
            observe(compiled.sql)
        cursor = dbapi_connection.cursor()
        pending = Pending(conn, compiled, arguments, cursor, in_pipeline=pipeline is not None)
        try:
            # A span when tracing is on (SQLAlchemy's events, which app.tracing follows
            # for Core statements, do not see these).
            with statement_span(compiled.sql, dialect.name):
                cursor.execute(compiled.sql, arguments)
        except dialect.loaded_dbapi.Error as exc:
            cursor.close()
            raise _wrapped(conn, exc, compiled.sql, arguments, cursor) from exc
        except BaseException:
            cursor.close()
            raise
        if pipeline is not None:
            pipeline.sent.append(pending)
        return pending


class Pending:
    """A statement sent by :meth:`Prepared.send`, whose rows may not have arrived yet."""

    def __init__(
        self,
        conn: Connection,
        compiled: _Compiled,
        arguments: Sequence[Any] | Mapping[str, Any],
        cursor: Any,
        *,
        in_pipeline: bool,
    ) -> None:
        self.conn = conn
        self.compiled = compiled
        self.arguments = arguments
        self.cursor = cursor
        self.in_pipeline = in_pipeline
        self._rows: list[dict[str, Any]] | None = None

    def rows(self) -> list[dict[str, Any]]:
        """The statement's rows (waiting for them if they have not arrived).

        :raises sqlalchemy.exc.DBAPIError: this statement, or one sent before it in the
            same pipeline, was refused or failed.
        """
        if self._rows is not None:
            return self._rows
        compiled, conn, cursor = self.compiled, self.conn, self.cursor
        dialect = conn.dialect
        try:
            if compiled.columns:
                fetched = cursor.fetchall()
                processors = _result_processors(compiled, dialect, cursor)
            else:
                fetched, processors = [], ()
        except dialect.loaded_dbapi.Error as exc:
            raise _wrapped(conn, exc, compiled.sql, self.arguments, cursor) from exc
        finally:
            if not self.in_pipeline:
                cursor.close()
        self._rows = [
            {
                name: (processor(value) if processor else value)
                for name, processor, value in zip(compiled.columns, processors, row, strict=True)
            }
            for row in fetched
        ]
        return self._rows


def _wrapped(
    conn: Connection,
    exc: Any,
    sql: str,
    arguments: Sequence[Any] | Mapping[str, Any] | None,
    cursor: Any,
) -> sa.exc.StatementError:
    """``exc`` as Core would have raised it, with the connection invalidated when lost."""
    dialect = conn.dialect
    dbapi_connection = conn.connection.dbapi_connection
    lost = dialect.is_disconnect(exc, dbapi_connection, cursor)
    if lost:
        conn.invalidate(exc)
    wrapped: sa.exc.StatementError = sa.exc.DBAPIError.instance(
        sql,
        arguments,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )
    return wrapped


# --- pipeline mode (PostgreSQL with psycopg) --------------------------------------------

_PIPELINE = "ninjahook.prepared.pipeline"
_FOLLOWED: weakref.WeakSet[Engine] = weakref.WeakSet()
_FOLLOW_LOCK = threading.Lock()


@dataclass
class _Pipeline:
    """The psycopg pipeline of one connection: opened by the first prepared statement,
    ended before anything else runs on the connection."""

    context: Any = None  # psycopg's pipeline() context manager, while open
    sent: list[Pending] = field(default_factory=list)

    def open(self, conn: Connection) -> None:
        if self.context is None:
            dbapi_connection = conn.connection.dbapi_connection
            assert dbapi_connection is not None
            context = dbapi_connection.pipeline()
            context.__enter__()
            self.context = context

    def close(self, conn: Connection, error: BaseException | None = None) -> None:
        """End the pipeline: wait for every answer (raising the first error, unless
        ``error`` is already on its way) and go back to the usual mode."""
        context, self.context = self.context, None
        sent, self.sent = self.sent, []
        try:
            if context is not None:
                if error is None:
                    try:
                        context.__exit__(None, None, None)
                    except conn.dialect.loaded_dbapi.Error as exc:
                        raise _wrapped(conn, exc, "(pipeline sync)", None, None) from exc
                else:
                    context.__exit__(type(error), error, error.__traceback__)
            if error is None:
                # Every answer is in: keep the rows nobody has read yet, before the
                # cursors that hold them are closed.
                for pending in sent:
                    if pending.compiled.columns:
                        pending.rows()
        finally:
            for pending in sent:
                pending.cursor.close()


def pipelining_supported(engine: Engine) -> bool:
    """Whether :func:`pipelined` sends ahead on ``engine`` (psycopg 3 with a libpq
    that has pipeline mode); elsewhere it changes nothing."""
    if engine.dialect.driver != "psycopg":
        return False
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


@contextmanager
def pipelined(conn: Connection) -> Iterator[bool]:
    """Run the prepared statements of the block in pipeline mode (see the module's text).

    Yields whether it does (PostgreSQL with psycopg); elsewhere the block runs as
    usual. When the block ends, every answer has arrived: an error in a statement
    sent ahead is raised here, wrapped as Core would.
    """
    if _PIPELINE in conn.info or not pipelining_supported(conn.engine):
        yield False
        return
    _follow(conn.engine)
    pipeline = _Pipeline()
    conn.info[_PIPELINE] = pipeline
    try:
        yield True
    except BaseException as exc:
        conn.info.pop(_PIPELINE, None)
        pipeline.close(conn, exc)
        raise
    else:
        conn.info.pop(_PIPELINE, None)
        pipeline.close(conn)


def _follow(engine: Engine) -> None:
    """Have Core statements, commits and rollbacks on ``engine`` end a pipeline first."""
    if engine in _FOLLOWED:
        return
    with _FOLLOW_LOCK:
        if engine in _FOLLOWED:
            return
        event.listen(engine, "before_cursor_execute", _end_before_execute)
        event.listen(engine, "commit", _end_before_commit)
        event.listen(engine, "rollback", _end_before_rollback)
        _FOLLOWED.add(engine)


def _end_before_execute(conn: Connection, *_args: Any) -> None:
    pipeline: _Pipeline | None = conn.info.get(_PIPELINE)
    if pipeline is not None and pipeline.context is not None:
        # Raised here, a driver error is wrapped by Core like the statement's own.
        context, pipeline.context = pipeline.context, None
        context.__exit__(None, None, None)


def _end_before_commit(conn: Connection) -> None:
    pipeline: _Pipeline | None = conn.info.get(_PIPELINE)
    if pipeline is not None and pipeline.context is not None:
        pipeline.close(conn)


def _end_before_rollback(conn: Connection) -> None:
    pipeline: _Pipeline | None = conn.info.get(_PIPELINE)
    if pipeline is not None and pipeline.context is not None:
        pipeline.close(conn, RuntimeError("rolling back"))


def _compile(statement: ClauseElement, dialect: Dialect, keys: frozenset[str]) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
    assert isinstance(compiled, SQLCompiler)
    escaped = getattr(compiled, "escaped_bind_names", None) or {}
    # construct_params names every parameter the SQL uses, as it names them, with the
    # values written into the statement (``.values(state="closed")``) filled in.
    sample = compiled.construct_params({key: None for key in keys}, _check=False)
    binds = []
    constants = {}
    for name, value in sample.items():
        processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        sql_name = escaped.get(name, name)
        if name in keys:
            binds.append((name, sql_name, processor))
        elif compiled.binds[name].required:
            raise KeyError(f"a value is required for the parameter {name!r}")
        else:
            constants[sql_name] = processor(value) if processor else value
    positions = compiled.positiontup if compiled.positional else None
    order = tuple(escaped.get(n, n) for n in positions) if positions is not None else None
    returned = compiled.returning is not None or isinstance(statement, sa.Select)
    columns = list(getattr(statement, "exported_columns", ())) if returned else []
    return _Compiled(
        sql=compiled.string,
        order=order,
        binds=tuple(binds),
        constants=constants,
        columns=tuple(column.key for column in columns),
        column_types=tuple(column.type.dialect_impl(dialect) for column in columns),
        results=[],
    )


def _result_processors(
    compiled: _Compiled, dialect: Dialect, cursor: Any
) -> tuple[Processor | None, ...]:
    # cursor.description only the first time: psycopg builds its Column objects anew on
    # every read of it, which was a tenth of the writer's CPU on PostgreSQL.
    if not compiled.results:
        description: Sequence[Sequence[Any]] = cursor.description
        compiled.results.append(
            tuple(
                impl.result_processor(dialect, column[1])
                for impl, column in zip(compiled.column_types, description, strict=True)
            )
        )
    return compiled.results[0]
