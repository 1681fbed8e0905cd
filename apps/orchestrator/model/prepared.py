"""The hot statements of a worker's pass, run on the database's own driver.

Through `Connection.execute` a statement of a pass cost 40-80 µs of SQLAlchemy (cache key,
execution context, parameters, result metadata) around 4-10 µs of SQLite, and a chain's pass
runs seven of them; on PostgreSQL SQLAlchemy, its asyncpg adapter's cursor and their greenlet
switches cost more than the statement's own round trip. A statement built once is compiled
once here, with the bind and result processors of its types, and each execution is the
driver's: sqlite3's `execute`, or an asyncpg statement prepared once per connection, with the
values those processors convert. What SQLAlchemy would send and read back, without the
machinery; errors are raised as SQLAlchemy raises them (`DBAPIError`), and a PostgreSQL
connection found dropped is invalidated, as SQLAlchemy does, so the pool never lends it again.

On PostgreSQL only the transactions' writer runs statements here: its transaction begins with
its first statement (`apps.core.database.take_begin`), which this module sends, so no statement
runs outside it. Elsewhere (the API's sessions, whose transaction SQLAlchemy's adapter begins)
statements go through `Connection.execute`.

A statement run this way has no expanding parameter (a list whose length is known only at each
execution): its builder gives a list as one parameter an element (`listed`). Statements not
built that way go through `Connection.execute` as before.
"""

import functools
import sqlite3
import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import BindParameter, ClauseElement, Dialect, bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine
from sqlalchemy.util import await_

from apps.core.database import asyncpg_error, asyncpg_of, is_postgres_writer, take_begin
from apps.orchestrator.model.models import UTCDateTime

Processor = Callable[[Any], Any] | None


# The most elements a list parameter has (`chunked`): a statement is compiled, and prepared by
# the driver, once per length, and a pass's lists are as long as its outcomes or claims.
MAX_LISTED = 16


def chunked(values: Sequence[Any]) -> list[Sequence[Any]]:
    """`values` in parts of at most `MAX_LISTED`, in order."""
    return [values[start : start + MAX_LISTED] for start in range(0, len(values), MAX_LISTED)]


def listed(name: str, count: int, type_: TypeEngine[Any] | None = None) -> list[BindParameter[Any]]:
    """`count` parameters standing for a list named `name` (see `spread`)."""
    return [bindparam(f"{name}_{index}", type_=type_) for index in range(count)]


def spread(name: str, values: Sequence[Any]) -> dict[str, Any]:
    """The values of the parameters `listed(name, len(values))`."""
    return {f"{name}_{index}": value for index, value in enumerate(values)}


class Compiled(NamedTuple):
    """What a statement compiles to on one kind of dialect: its text, its parameters (name,
    whether a value must be given, the value it has otherwise, its type) and its columns."""

    sql: str
    parameters: list[tuple[str, bool, Any, TypeEngine[Any]]]
    columns: list[tuple[str, TypeEngine[Any]]]


@functools.cache
def _compile(statement: Executable, dialect: Dialect) -> Compiled:
    """`statement` compiled once per kind of dialect (see `_kind`), whichever engine asks: the
    claim takes milliseconds to compile, and tests, the CLI and benchmarks open engines often."""
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    if compiled.positiontup is None or compiled.insert_prefetch or compiled.update_prefetch:
        # Defaults computed at execution (`onupdate=utcnow`) would be left out: a statement
        # run here sets each column it writes.
        raise ValueError("a statement with Python-side defaults, or not positional")
    parameters = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        if bind.expanding:
            raise ValueError(f"parameter {name!r} expands: build it with `listed`")
        parameters.append((name, bind.required, bind.effective_value, bind.type))
    columns = [(column.key, column.type) for column in getattr(statement, "exported_columns", ())]
    return Compiled(compiled.string, parameters, columns)


class Prepared:
    """A statement compiled for one dialect, with its parameters' order and the processors of
    that dialect object (its JSON serializer is the engine's)."""

    def __init__(self, compiled: Compiled, dialect: Dialect) -> None:
        self.sql = compiled.sql
        self._dialect = dialect
        self._parameters: list[tuple[str, bool, Any, Processor]] = [
            (name, required, default, _bind_processor(type_, dialect))
            for name, required, default, type_ in compiled.parameters
        ]
        self._columns = compiled.columns
        self._row: Any = namedtuple("Row", [key for key, _ in compiled.columns])  # type: ignore[misc]
        self._results: dict[tuple[Any, ...] | None, list[Processor]] = {}
        if dialect.name == "sqlite":
            self.results(None)

    def results(self, column_types: tuple[Any, ...] | None) -> list[Processor]:
        """The result processors of the columns, given the driver's types of them (asyncpg's
        type oids, which some of SQLAlchemy's processors for asyncpg choose by; None on
        SQLite)."""
        processors = self._results.get(column_types)
        if processors is None:
            kinds = column_types or (None,) * len(self._columns)
            dialect = self._dialect
            processors = self._results[column_types] = [
                type_.dialect_impl(dialect).result_processor(dialect, kind)
                for (_, type_), kind in zip(self._columns, kinds, strict=True)
            ]
        return processors

    def values(self, given: Mapping[str, Any]) -> tuple[Any, ...]:
        """The driver's parameters for the values `given` by name."""
        values = []
        for name, required, default, processor in self._parameters:
            value = given[name] if required or name in given else default
            values.append(processor(value) if processor else value)
        return tuple(values)

    def row(self, raw: Sequence[Any], processors: list[Processor]) -> Any:
        return self._row._make(
            [
                processor(value) if processor else value
                for processor, value in zip(processors, raw, strict=True)
            ]
        )


def _bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Processor:
    if isinstance(type_, UTCDateTime) and dialect.name == "sqlite":
        return _sqlite_utc_text
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _sqlite_utc_text(value: datetime | None) -> str | None:
    """The text `UTCDateTime` stores on SQLite (naive UTC, SQLAlchemy's format, microseconds
    always), in one call: SQLAlchemy's processors (the type's conversion, then the dialect's
    formatting) cost some 8 µs a timestamp, and a chain's pass binds a dozen."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given where a UTC timestamp is stored")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


_PREPARED: "weakref.WeakKeyDictionary[Dialect, dict[Executable, Prepared | None]]" = (
    weakref.WeakKeyDictionary()
)


def _prepared(connection: Connection, statement: Executable) -> Prepared | None:
    """`statement` prepared for the connection's dialect object (its JSON serializer is the
    engine's); None where it runs through SQLAlchemy: not on SQLite's standard driver or the
    PostgreSQL writer's connection (the transactions'; aiosqlite's connection is not called
    directly), or not preparable."""
    driver = connection.dialect.driver
    if driver != "pysqlite" and not (driver == "asyncpg" and is_postgres_writer(connection)):
        return None
    # `get` first: `setdefault` makes a weak reference with a callback on every statement.
    known = _PREPARED.get(connection.dialect)
    if known is None:
        known = _PREPARED.setdefault(connection.dialect, {})
    if statement not in known:
        try:
            compiled = _compile(statement, _kind(connection.dialect))
            known[statement] = Prepared(compiled, connection.dialect)
        except ValueError:
            known[statement] = None
    return known[statement]


_KINDS: dict[tuple[type[Dialect], str, tuple[Any, ...] | None], Dialect] = {}


def _kind(dialect: Dialect) -> Dialect:
    """The first dialect object seen of `dialect`'s class, parameter style and server version:
    they compile statements alike."""
    key = (type(dialect), dialect.paramstyle, dialect.server_version_info)
    return _KINDS.setdefault(key, dialect)


def fetch(connection: Connection, statement: Executable, values: Mapping[str, Any]) -> list[Any]:
    """The rows `statement` returns, run with `values` in the connection's transaction."""
    prepared = _prepared(connection, statement)
    if prepared is None:
        return list(connection.execute(statement, values))
    parameters = prepared.values(values)
    if connection.dialect.name == "postgresql":
        rows, column_types = _on_asyncpg(connection, prepared.sql, parameters, many=False)
        processors = prepared.results(column_types)
        return [prepared.row(row, processors) for row in rows]
    try:
        rows = _driver(connection).execute(prepared.sql, parameters).fetchall()
    except sqlite3.Error as error:
        raise _dbapi_error(prepared.sql, parameters, error) from error
    processors = prepared.results(None)
    return [prepared.row(row, processors) for row in rows]


def execute_many(
    connection: Connection, statement: Executable, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Run `statement` (one that returns no rows) once per mapping of `rows`."""
    prepared = _prepared(connection, statement)
    if prepared is None:
        connection.execute(statement, list(rows))
        return
    parameters = [prepared.values(row) for row in rows]
    if connection.dialect.name == "postgresql":
        _on_asyncpg(connection, prepared.sql, parameters, many=True)
        return
    try:
        _driver(connection).executemany(prepared.sql, parameters)
    except sqlite3.Error as error:
        raise _dbapi_error(prepared.sql, parameters, error) from error


_CONNECTION = "prepared.connection"


def connection_of(session: Session) -> Connection:
    """`session.connection()`, which a pass asks for before each statement and which costs
    some 20 µs of the session's state machinery each time: kept for the session's
    transaction."""
    transaction = session.get_transaction()
    kept = session.info.get(_CONNECTION)
    if transaction is not None and kept is not None and kept[0] is transaction:
        connection: Connection = kept[1]
        return connection
    connection = session.connection()
    session.info[_CONNECTION] = (session.get_transaction(), connection)
    return connection


def begin_with(connection: Connection, sql: str) -> str | None:
    """On the PostgreSQL writer's connection, while its transaction is yet to begin: BEGIN, then
    `sql` (statements without parameters, whose rows are not read), as one simple query, one
    round trip; the command status of the last statement (e.g. "SELECT 2"). None, and nothing
    run, elsewhere."""
    if connection.dialect.driver != "asyncpg" or not is_postgres_writer(connection):
        return None
    if not take_begin(connection):
        return None
    try:
        status: str = await_(asyncpg_of(connection).execute(f"BEGIN; {sql}"))
    except Exception as error:
        raise asyncpg_error(connection, sql, (), error) from error
    return status


# Where a writer connection keeps its statements prepared on asyncpg: (driver connection, {SQL:
# (asyncpg's prepared statement, the type oids of its columns)}).
_STATEMENTS = "prepared.asyncpg_statements"


def _on_asyncpg(
    connection: Connection, sql: str, parameters: Any, *, many: bool
) -> tuple[list[Any], tuple[int, ...] | None]:
    """Run `sql` on the writer connection's asyncpg driver (with each tuple of `parameters`
    when `many`), as a statement prepared once per connection, after the BEGIN when the
    transaction is yet to begin: its rows and their columns' type oids. One hand-off to the
    event loop for all of it."""
    driver = asyncpg_of(connection)
    kept = connection.info.get(_STATEMENTS)
    if kept is None or kept[0] is not driver:
        kept = connection.info[_STATEMENTS] = (driver, {})
    statements: dict[str, Any] = kept[1]
    begin = take_begin(connection)
    try:
        return await_(_run_on_asyncpg(driver, statements, sql, parameters, many, begin))
    except Exception as error:
        # A statement the server no longer knows (the schema changed) is prepared again.
        statements.pop(sql, None)
        raise asyncpg_error(connection, sql, parameters, error) from error


async def _run_on_asyncpg(
    driver: Any, statements: dict[str, Any], sql: str, parameters: Any, many: bool, begin: bool
) -> tuple[list[Any], tuple[int, ...] | None]:
    if begin:
        await driver.execute("BEGIN")
    kept = statements.get(sql)
    if kept is None:
        statement = await driver.prepare(sql)
        types = tuple(attribute.type.oid for attribute in statement.get_attributes())
        kept = statements[sql] = (statement, types)
    statement, types = kept
    if many:
        await statement.executemany(parameters)
        return [], types
    return await statement.fetch(*parameters), types


def _driver(connection: Connection) -> sqlite3.Connection:
    # The pass's connection has begun its transaction (BEGIN IMMEDIATE) when it was handed out.
    driver: sqlite3.Connection = connection.connection.driver_connection  # type: ignore[assignment]
    return driver


def _dbapi_error(sql: str, parameters: Any, error: sqlite3.Error) -> DBAPIError:
    """The driver's `error` as SQLAlchemy raises it (`DBAPIError`), which is what
    `is_transient` and the pass runner's isolation of a faulty run look at. (Caught where each
    statement runs rather than by a context manager around it: that cost a generator's frame
    on every statement of every pass.)"""
    wrapped = DBAPIError.instance(sql, parameters, error, sqlite3.Error, hide_parameters=True)
    assert isinstance(wrapped, DBAPIError)
    return wrapped
