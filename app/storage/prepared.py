"""Statements that every delivery runs, compiled once and executed on the DBAPI cursor.

SQLAlchemy Core spends about 30 µs of Python per ``Connection.execute`` (cache
lookup, parameter construction, execution context, result wrapper) around a
statement that SQLite runs in 5 to 15 µs. Ingest runs up to four of them per new
activity while it holds SQLite's single write lock, so that overhead bounds how
many deliveries per second the whole server can commit. A :class:`Prepared`
statement is still built with Core (so the SQL stays in this package and matches
the dialect), compiled once per dialect and set of parameter names, and then run
on the connection's own DBAPI cursor, inside the same transaction.

What stays the same as ``Connection.execute``: the dialect's bind and result type
processors are applied, and a DBAPI error is raised as SQLAlchemy's wrapped
exception (``sqlalchemy.exc.OperationalError`` and so on), with the connection
invalidated when the error means it was lost, so the error handlers and the
connection pool see what they would have seen.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.types import TypeEngine

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
        for observe in statement_observers:
            observe(compiled.sql)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(compiled.sql, arguments)
            if compiled.columns:
                fetched = cursor.fetchall()
                processors = _result_processors(compiled, dialect, cursor.description)
            else:
                fetched, processors = [], ()
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, dbapi_connection, cursor)
            if lost:
                conn.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                compiled.sql,
                arguments,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=dialect,
            ) from exc
        finally:
            cursor.close()
        return [
            {
                name: (processor(value) if processor else value)
                for name, processor, value in zip(compiled.columns, processors, row, strict=True)
            }
            for row in fetched
        ]


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
    compiled: _Compiled, dialect: Dialect, description: Sequence[Sequence[Any]]
) -> tuple[Processor | None, ...]:
    if not compiled.results:
        compiled.results.append(
            tuple(
                impl.result_processor(dialect, column[1])
                for impl, column in zip(compiled.column_types, description, strict=True)
            )
        )
    return compiled.results[0]
