"""The one place that builds database engines and sessions, and the one unit of work that commits.

Engines are built by whoever runs (the API's lifespan, the worker, the CLI), never at import time.
"""

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Insert, event, text
from sqlalchemy import create_engine as _create_sync_engine
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolProxiedConnection, PoolResetState
from sqlalchemy.util import await_, greenlet_spawn

from apps.core.fair_pool import IDLE_SECONDS, FirstComePool
from apps.core.settings import Settings

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5_000
# Execution option naming how a SQLite transaction begins ("immediate" for writers).
SQLITE_BEGIN = "sqlite_begin"

SessionFactory = async_sessionmaker[AsyncSession]
# JSON columns refuse NaN and infinities rather than store text that SQLite's JSON functions and
# PostgreSQL reject: a value that slipped past the edge fails its own write, not every later read.
JSON_SERIALIZER = functools.partial(json.dumps, allow_nan=False)

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _casefold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


def register_sqlite_functions(dbapi_connection: Any, _record: object = None) -> None:
    """The functions the schema's SQL calls: `casefold`, by title search and by the triggers
    that keep its index (migration 0005), so every connection that writes runs needs them."""
    # SQLite's LIKE and lower() fold ASCII letters only; titles are written in every language.
    dbapi_connection.create_function("casefold", 1, _casefold, deterministic=True)


def _tune_sqlite_connection(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    register_sqlite_functions(dbapi_connection)
    # The driver's own implicit BEGIN is off: `_begin_sqlite_transaction` says how each begins.
    dbapi_connection.isolation_level = None
    # WAL lets readers run beside the one writer; NORMAL is durable at checkpoints under WAL.
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "foreign_keys=ON",
        f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        "synchronous=NORMAL",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    """Writers take the write lock when they begin; reads run without a transaction.

    A deferred transaction that reads and then writes fails at once with "database is locked"
    when another connection wrote in between (SQLite cannot upgrade a stale read snapshot), and
    the worker and the API write side by side. A read connection issues single SELECTs, which
    need no BEGIN, and must not take the write lock.
    """
    if connection.get_execution_options().get(SQLITE_BEGIN) == "immediate":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _roll_back_what_is_open(
    dbapi_connection: Any, record: ConnectionPoolEntry, state: PoolResetState
) -> None:
    """The pool's reset of a SQLite connection given back: a rollback only when it holds a
    transaction. Through aiosqlite a rollback is a hand-off to the connection's thread and back,
    and a read that calls the driver itself (a runs page) begins none."""
    driver = record.driver_connection
    in_transaction = driver is not None and driver.in_transaction
    if state.asyncio_safe and not state.terminate_only and in_transaction:
        dbapi_connection.rollback()


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    """Build the engine for `url` (the settings' DATABASE_URL by default)."""
    url = url or settings.database_url
    if is_sqlite(url):
        # Each aiosqlite connection is a thread of its own and SQLite admits one writer at a
        # time: connections beyond the pool would only add threads contending for the GIL.
        engine = _create_async_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=0,
            # The connection given back last is lent first, as `SqliteReaders` lends: below full
            # load a few connections serve, their page caches warm, and the others' stay empty.
            # Lent in turn, every connection of the pool filled a page cache of its own.
            pool_use_lifo=True,
            pool_reset_on_return=None,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            json_serializer=JSON_SERIALIZER,
        )
        event.listen(engine.sync_engine, "connect", _tune_sqlite_connection)
        event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
        event.listen(engine.sync_engine, "reset", _roll_back_what_is_open)
        return engine
    return _create_postgres_engine(
        url,
        settings.db_pool_size,
        settings.db_max_overflow,
        idle_seconds=settings.db_pool_idle_seconds,
        on_checkout=_ping_postgresql,
    )


# How long asyncpg waits for PostgreSQL. Its own defaults are a minute to connect and no limit on
# a statement: a server that stops answering without refusing (a network partition, a failover
# that drops packets) held requests for a minute, then answered them 500, or held them for good
# on a pooled connection. A connection opens in milliseconds, and no statement of the service
# takes seconds (a page, a pass, the scrape's count at ten million runs); past these the
# database is out of reach: a request answers 503, a worker's pass is tried again.
CONNECT_TIMEOUT_SECONDS = 5.0
COMMAND_TIMEOUT_SECONDS = 30.0
# The pool's pre-ping, which an answering server answers at once.
PING_TIMEOUT_SECONDS = 2.0


def _create_postgres_engine(
    url: str | URL,
    pool_size: int,
    max_overflow: int,
    *,
    idle_seconds: float,
    on_checkout: Callable[[Any, ConnectionPoolEntry, PoolProxiedConnection], None],
    isolation_level: str | None = None,
) -> AsyncEngine:
    """An engine on PostgreSQL whose pool runs `on_checkout` before lending a connection, and
    closes a connection beyond `pool_size` once it has sat idle `idle_seconds`; in
    `isolation_level` when given."""
    options = {"isolation_level": isolation_level} if isolation_level else {}
    engine = _create_async_engine(
        url,
        # First come, first served: a request arriving as a connection is given back does not
        # take it from the ones waiting (`fair_pool`). Overflow connections are kept while in
        # use now and then: one closed when it came back was opened again at the next burst (a
        # server process, the driver's type set-up, a prepare of each statement again), which
        # at 32 concurrent reads cost more than the reads. Closed once idle `idle_seconds`, they
        # no longer pile up, past `max_connections`, in a deployment that had a burst.
        poolclass=FirstComePool,
        pool_size=pool_size,
        max_overflow=max_overflow,
        idle_seconds=idle_seconds,
        # The connection given back last is lent first, as pgbouncer lends its server
        # connections: below full load the few connections that serve stay warm (caches, plans)
        # and the others sit idle until they are closed. Lent in turn, a trickle of requests
        # kept every connection of a burst open and spread them over as many server processes.
        pool_use_lifo=True,
        json_serializer=JSON_SERIALIZER,
        # No JIT: the service's statements read or write a page of rows, which JIT never speeds
        # up, and a plan estimated over millions of rows (a generic plan of a list on ten million
        # runs) passes `jit_above_cost` and spent 80 ms compiling a query that runs in 2.
        connect_args={
            "server_settings": {"jit": "off"},
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "command_timeout": COMMAND_TIMEOUT_SECONDS,
        },
        **options,
    )
    event.listen(engine.sync_engine.pool, "checkout", on_checkout)
    return engine


def _ping_postgresql(
    dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """The pool's pre-ping in one round trip: SQLAlchemy's for asyncpg wraps its `;` in a
    transaction of its own (BEGIN, `;`, ROLLBACK), three round trips before every request's one
    query. A connection the server dropped is replaced by a new one before the caller has it."""
    try:
        await_(dbapi_connection.driver_connection.fetchrow(";", timeout=PING_TIMEOUT_SECONDS))
    except Exception as error:
        raise DisconnectionError(f"the pooled connection is gone: {error!r}") from error


def create_migration_engine(url: str) -> AsyncEngine:
    """An engine for Alembic.

    SQLite gets no `foreign_keys=ON` here: batch migrations rebuild a table by dropping it, which
    with foreign keys on would cascade into the rows that refer to it.
    """
    engine = _create_async_engine(url, poolclass=NullPool)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", register_sqlite_functions)
    return engine


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions are units of work that write: on SQLite they begin holding the write lock."""
    writer = engine.execution_options(**{SQLITE_BEGIN: "immediate"})
    return async_sessionmaker(writer, expire_on_commit=False, autoflush=False)


# Where the session of a unit of work keeps the rows it inserts last (`insert_at_commit`); a
# session without it is not a unit of work's.
_AT_COMMIT = "insert_at_commit"


def insert_at_commit(session: Session, statement: Insert, row: dict[str, Any]) -> None:
    """Have `statement` insert `row` at the commit point of the session's unit of work: after
    everything else the unit wrote, in one execution with the other rows of that statement.

    For rows whose order must follow commit order (events: see `transitions.record_event`):
    the later they are inserted, the shorter the locks that keep that order are held.
    """
    pending: dict[Insert, list[dict[str, Any]]] | None = session.info.get(_AT_COMMIT)
    if pending is None:
        # Nothing would insert the row: a bare session's commit is no commit point.
        raise RuntimeError("insert_at_commit outside a unit of work (unit_of_work, Transactions)")
    pending.setdefault(statement, []).append(row)


def take_at_commit(session: Session, statement: Insert) -> list[dict[str, Any]]:
    """The rows kept so far for `statement` (`insert_at_commit`), which the caller now
    inserts itself, in its last statement (rows kept after this one are inserted at commit)."""
    pending: dict[Insert, list[dict[str, Any]]] = session.info[_AT_COMMIT]
    return pending.pop(statement, [])


def _insert_pending(session: Session) -> None:
    """What every commit point does just before it commits: the rows `insert_at_commit` kept."""
    pending: dict[Insert, list[dict[str, Any]]] = session.info.pop(_AT_COMMIT)
    if not pending:
        return
    session.flush()
    connection = session.connection()
    for statement, rows in pending.items():
        connection.execute(statement, rows)


def _work_then_pending(
    session: Session,
    work: Callable[Concatenate[Session, P], T],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    session.info[_AT_COMMIT] = {}
    result = work(session, *args, **kwargs)
    _insert_pending(session)
    return result


@asynccontextmanager
async def unit_of_work(sessions: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed when the block ends and rolled back if it raises.

    Domain functions only add and flush; this is where their work becomes durable, with the rows
    they asked to be inserted at the commit point.
    """
    async with sessions() as session:
        session.info[_AT_COMMIT] = {}
        yield session
        await session.run_sync(_insert_pending)
        await session.commit()


class Transactions:
    """Runs a synchronous domain function in a transaction of its own, committed when it returns
    (with the rows it asked to be inserted at the commit point) and rolled back if it raises.

    The orchestrator's bookkeeping (a worker's pass, an operator's decision) is synchronous
    SQLAlchemy code, run in one synchronous session from begin to close. On PostgreSQL the
    session drives asyncpg from a greenlet on the event loop, on an engine of its own whose
    transactions begin with their first statement and commit on the driver (`_PostgresWriter`):
    one greenlet a transaction, where an `AsyncSession` spawns one each for the work, the commit
    and the close. On SQLite it runs on one thread of its own over the standard sqlite3 driver:
    a worker's pass is about ten statements, and through aiosqlite each costs four hand-offs
    between threads, which made the bookkeeping of a node cost more than the node. SQLite admits
    one writer at a time, so a single writing thread loses nothing; it keeps its one connection
    (`_SqliteWriter`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self._committed: set[Callable[[], None]] = set()
        self._thread: _WriterThread | None = None
        self._postgres: _PostgresWriter | None = None
        self._sqlite: _SqliteWriter | None = None
        if engine.dialect.name == "sqlite":
            self._sqlite = _SqliteWriter(engine.url)
            self._thread = _WriterThread("sqlite-writer")
        else:
            self._postgres = _PostgresWriter(engine.url, pool_size, max_overflow, idle_seconds)

    @property
    def on_loop(self) -> bool:
        """Whether transactions run on the event loop (PostgreSQL's, in a greenlet) rather than
        on a thread of their own (SQLite's writer)."""
        return self._thread is None

    def on_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` on the event loop after each transaction commits; returns what
        stops it."""
        self._committed.add(listener)
        return functools.partial(self._committed.discard, listener)

    async def run(
        self, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`work(session, *args, **kwargs)` in one transaction; what it returned."""
        return await self._call(functools.partial(self._in_transaction, work, *args, **kwargs))

    async def run_after(
        self,
        prepare: Callable[[], A],
        work: Callable[Concatenate[Session, A, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`work(session, prepare(), *args, **kwargs)` in one transaction, where `prepare` blocks
        (writes files) and runs off the event loop before the transaction begins.

        On SQLite `prepare` runs on the writer's thread just before the transaction, in the
        same hand-off: a thread crossing each way less than running it in a thread of its own
        first. On PostgreSQL it runs in a thread, then the transaction on the event loop."""
        if self._thread is None:
            prepared = await asyncio.to_thread(prepare)
            return await self.run(work, prepared, *args, **kwargs)
        call = functools.partial(self._prepared_transaction, prepare, work, *args, **kwargs)
        return await self._call(call)

    async def _call(self, call: Callable[[], T]) -> T:
        """`call()`, a transaction, where transactions run; then the commit's listeners."""
        if self._thread is None:
            # The greenlet takes the caller's context (log fields, tags) along.
            result = await greenlet_spawn(call)
        else:
            result = await self._thread.call(call)
        for listener in tuple(self._committed):
            listener()
        return result

    def _in_transaction(
        self, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if self._sqlite is not None:
            return self._sqlite.run(work, *args, **kwargs)
        assert self._postgres is not None
        return self._postgres.run(work, *args, **kwargs)

    def _prepared_transaction(
        self,
        prepare: Callable[[], A],
        work: Callable[Concatenate[Session, A, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return self._in_transaction(work, prepare(), *args, **kwargs)

    async def close(self) -> None:
        """Close the writer's connections (and on SQLite its thread)."""
        if self._postgres is not None:
            await self._postgres.engine.dispose()
        if self._sqlite is not None and self._thread is not None:
            await self._thread.call(self._sqlite.close)
            self._thread.stop()


class _WriterThread:
    """A thread of its own that runs calls one at a time, in the order they were asked for,
    each handing back what it returned, or raised, to the event loop that awaits it.

    What `loop.run_in_executor` on a one-thread pool does, with less between the two threads:
    there a call and its result pass through a `concurrent.futures.Future` (its lock, its
    condition, a callback that copies it into the loop's future) and the pool's work item,
    and the pool's bookkeeping runs after the result while holding the interpreter's lock,
    which the woken loop waits for. A chain's node crosses to the writer and back once each:
    clocked over a 200-node chain, the crossing there took 74 µs at the median through the
    pool and 21 here, the crossing back 155 and 58. Here the thread hands the result to the
    loop and at once waits for the next call. A call whose caller was cancelled before it
    began is not run, as in the pool."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """A future of `call()` run on the thread, with the caller's context (log fields, tags)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            # Made at the first call, as the pool made its thread: a writer never used has none.
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        self._calls.put(_Call(loop, future, contextvars.copy_context(), call))
        return future

    def stop(self) -> None:
        """End the thread once the calls asked for before are done."""
        if self._thread is not None:
            self._calls.put(None)
            self._thread.join()
            self._thread = None

    def _serve(self) -> None:
        while (asked := self._calls.get()) is not None:
            if asked.future.cancelled():
                continue
            try:
                result = asked.context.run(asked.call)
            except BaseException as error:
                asked.settle(None, error)
            else:
                asked.settle(result, None)


@dataclass(frozen=True, slots=True)
class _Call:
    """A call asked of a `_WriterThread`: run in `context`, its end handed to `future`."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    context: contextvars.Context
    call: Callable[[], Any]

    def settle(self, result: Any, error: BaseException | None) -> None:
        """Hand the call's end to its future, on its loop (from the writer's thread)."""
        # Refused when the loop was closed meanwhile: nobody awaits the call any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        # Its caller was cancelled while the call ran.
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _create_postgres_writer(
    url: URL, pool_size: int, max_overflow: int, idle_seconds: float
) -> AsyncEngine:
    """The engine of the orchestrator's transactions on PostgreSQL: the API's, without the pool's
    pre-ping, in SQLAlchemy's autocommit (`_PostgresWriter` begins and commits each transaction
    on the driver). A ping is a round trip at every checkout, and a worker's pass is about ten.
    A connection the server closed (a restart, `pg_terminate_backend`) that asyncpg has seen
    close is replaced at checkout at no cost; one that dies unseen fails its transaction as a
    disconnect, which the pool recovers from and the worker takes as transient (see
    `is_transient`), as a connection dying mid-pass always was.

    Its pool lends the connection returned last, as the API's does: a worker's passes follow one
    another, and taking the idle connections in turn spread them over as many server processes,
    each with colder caches than the one just used (and a statement prepared again on each)."""
    return _create_postgres_engine(
        url,
        pool_size,
        max_overflow,
        idle_seconds=idle_seconds,
        on_checkout=_refuse_closed_connection,
        isolation_level="AUTOCOMMIT",
    )


def _refuse_closed_connection(
    dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    driver = dbapi_connection.driver_connection
    if driver.is_closed():
        # The pool discards it and checks out another (SQLAlchemy's own retry).
        raise DisconnectionError("the server closed this connection")
    if driver.is_in_transaction():
        # Given back with its transaction open (`_PostgresWriter` failed to end it): never lent.
        raise DisconnectionError("the connection holds a transaction")


# `Connection.info` keys of the PostgreSQL writer's connections: that they are the writer's, and
# that the transaction is yet to begin (`take_begin`).
_WRITER = "transactions.postgres_writer"
_BEGIN_PENDING = "transactions.begin_pending"


class _PostgresWriter:
    """The transactions' connections to PostgreSQL, and their transactions.

    The engine runs in SQLAlchemy's autocommit, and the transaction is begun and committed here,
    on the driver: asyncpg's BEGIN is a round trip of its own, which the transaction sends with
    its first statement where that statement allows it (a worker's pass begins with the lock of
    the runs it records, `locks.lock_runs_for_recording`, one simple query with the BEGIN). Any
    other first statement, through SQLAlchemy or the driver (`prepared`), is preceded by the
    BEGIN (`take_begin`): none runs outside the transaction. Errors are raised as SQLAlchemy
    raises them (`asyncpg_error`); a transaction that fails is rolled back on the driver, and a
    connection that cannot say where it stands (dropped, or interrupted mid-statement) is
    invalidated, so the pool never lends it again."""

    def __init__(self, url: URL, pool_size: int, max_overflow: int, idle_seconds: float) -> None:
        self.engine = _create_postgres_writer(url, pool_size, max_overflow, idle_seconds)
        event.listen(self.engine.sync_engine, "before_cursor_execute", _begin_before_statement)

    def run(
        self, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        with self.engine.sync_engine.connect() as connection:
            connection.info[_WRITER] = True
            connection.info[_BEGIN_PENDING] = True
            try:
                # The session's own transaction is bookkeeping (autocommit): it begins and
                # commits nothing on the server.
                with Session(connection, expire_on_commit=False, autoflush=False) as session:
                    result = _work_then_pending(session, work, *args, **kwargs)
                    session.flush()
                if not take_begin(connection):
                    _on_asyncpg(connection, "COMMIT")
            except BaseException as error:
                _end_failed(connection, error)
                raise
        return result


def is_postgres_writer(connection: Connection) -> bool:
    """Whether `connection` is one of the PostgreSQL writer's (see `_PostgresWriter`)."""
    return bool(connection.info.get(_WRITER))


def take_begin(connection: Connection) -> bool:
    """Whether the PostgreSQL writer's transaction on `connection` is yet to begin; from now on
    it counts as begun, and the caller sends the BEGIN: before its statement, or with it in the
    same round trip."""
    return bool(connection.info.pop(_BEGIN_PENDING, False))


def _begin_before_statement(connection: Connection, *_: Any) -> None:
    """Before a statement SQLAlchemy runs on the writer's connection: the BEGIN, when the
    transaction is yet to begin. A failure is the adapter's error, which SQLAlchemy raises as
    it raises the statement's own (and invalidates a dropped connection)."""
    if take_begin(connection):
        try:
            await_(asyncpg_of(connection).execute("BEGIN"))
        except Exception as error:
            adapter: Any = connection.connection.dbapi_connection
            adapter._handle_exception(error)


def _on_asyncpg(connection: Connection, sql: str) -> None:
    """`sql` run on the connection's asyncpg driver, its errors raised as SQLAlchemy raises them."""
    try:
        await_(asyncpg_of(connection).execute(sql))
    except Exception as error:
        raise asyncpg_error(connection, sql, (), error) from error


def _end_failed(connection: Connection, error: BaseException) -> None:
    """Roll back on the driver what a failed transaction left; or invalidate the connection
    when it was dropped, when the rollback fails, or when the work was interrupted (a cancel)
    while a statement may have been in flight."""
    if connection.invalidated:
        return
    driver = asyncpg_of(connection)
    if not isinstance(error, Exception) or driver.is_closed():
        connection.invalidate()
        return
    if driver.is_in_transaction():
        try:
            await_(driver.execute("ROLLBACK"))
        except Exception as failed:
            connection.invalidate(failed)


def asyncpg_of(connection: Connection) -> Any:
    """The asyncpg connection under a PostgreSQL connection of SQLAlchemy's."""
    driver = connection.connection.driver_connection
    assert driver is not None
    return driver


def asyncpg_error(
    connection: Connection, sql: str, parameters: Any, error: Exception
) -> DBAPIError:
    """`error`, which asyncpg raised running `sql` on the connection's driver, as SQLAlchemy
    raises it: translated as its asyncpg adapter translates (so an integrity error is an
    `IntegrityError`, with its SQLSTATE, which `is_transient` reads), wrapped in a `DBAPIError`;
    a connection found dropped is invalidated, so that the pool does not lend it again."""
    adapter: Any = connection.connection.dbapi_connection
    translated: Any = error
    try:
        adapter._handle_exception(error)
    except Exception as raised:
        translated = raised
    dropped = bool(connection.dialect.is_disconnect(translated, adapter, None))
    if dropped:
        connection.invalidate(translated)
    wrapped = DBAPIError.instance(
        sql,
        parameters,
        translated,
        connection.dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=dropped,
        dialect=connection.dialect,
    )
    assert isinstance(wrapped, DBAPIError)
    return wrapped


class _SqliteWriter:
    """The transactions' one connection to the SQLite file, on the writer's thread.

    It stays checked out from begin to begin: a chain's node is a transaction, and taking the
    connection from the pool and giving it back (with the pool's reset), the session's
    connection set-up and a BEGIN sent through SQLAlchemy cost some 0.1 ms of the 0.9 ms of CPU
    its pass took on the writer's thread. The transaction begins and commits on the driver,
    around a session bound to the connection; errors are raised as SQLAlchemy raises them, which
    `is_transient` looks at."""

    def __init__(self, url: URL) -> None:
        self.engine = _create_sync_engine(
            url.set(drivername="sqlite+pysqlite"),
            pool_size=1,
            max_overflow=0,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            json_serializer=JSON_SERIALIZER,
        )
        event.listen(self.engine, "connect", _tune_sqlite_connection)
        self._connection: Connection | None = None

    def _connect(self) -> Connection:
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            if connection is not None:
                connection.close()
            connection = self._connection = self.engine.connect()
        return connection

    def run(
        self, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        connection = self._connect()
        # The SQLAlchemy transaction is bookkeeping (pysqlite's begin sends nothing): the
        # write lock is taken by BEGIN IMMEDIATE, for the reason `_begin_sqlite_transaction` gives.
        transaction = connection.begin()
        try:
            _on_driver(connection, "BEGIN IMMEDIATE")
            # The session joins the connection's transaction and does not commit it: that is
            # done here, once.
            with Session(connection, expire_on_commit=False, autoflush=False) as session:
                result = _work_then_pending(session, work, *args, **kwargs)
                session.flush()
            transaction.commit()
        except BaseException:
            # Back to the pool, whose reset rolls back whatever the driver still holds (a
            # commit that failed half-way included); the next transaction checks it out again.
            self._connection = None
            connection.close()
            raise
        return result

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self.engine.dispose()


def _on_driver(connection: Connection, sql: str) -> None:
    """`sql` run on the connection's driver, its errors raised as SQLAlchemy raises them."""
    driver = connection.connection.driver_connection
    assert driver is not None
    try:
        driver.execute(sql)
    except sqlite3.Error as error:
        raise DBAPIError.instance(sql, (), error, sqlite3.Error, hide_parameters=True) from error


def create_read_engine(engine: AsyncEngine) -> AsyncEngine:
    """`engine`, with its pool, for routes that only read.

    On PostgreSQL their connections run in autocommit: under READ COMMITTED each statement has a
    snapshot of its own inside a transaction too, so nothing read changes, and a read is then one
    round trip instead of three (asyncpg's BEGIN, the statement, and the ROLLBACK that resets the
    connection when it goes back to the pool). On SQLite a read begins no transaction anyway."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


@dataclass(frozen=True, slots=True)
class Database:
    """What an entry point opens once: the engine, its sessions and its transactions runner."""

    engine: AsyncEngine
    sessions: SessionFactory
    transactions: Transactions
    read_engine: AsyncEngine


@asynccontextmanager
async def open_database(settings: Settings, url: str | None = None) -> AsyncIterator[Database]:
    """The database of `url` (the settings' DATABASE_URL by default), closed when done."""
    engine = create_engine(settings, url)
    sessions = create_session_factory(engine)
    transactions = Transactions(
        engine,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        idle_seconds=settings.db_pool_idle_seconds,
    )
    try:
        yield Database(engine, sessions, transactions, create_read_engine(engine))
    finally:
        await transactions.close()
        await engine.dispose()


# SQLSTATE classes of failures that say nothing of the statement: connection exceptions, rollbacks
# (serialization failures, deadlocks), insufficient resources, operator intervention.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})
# sqlite3 raises OperationalError for a busy database and for malformed JSON alike. A file that
# is not (or no longer) a database is out of reach too: nothing a statement or a run did.
SQLITE_TRANSIENT_MESSAGES = (
    "database is locked",
    "database table is locked",
    "unable to open database",
    "disk i/o error",
    "database or disk is full",
    "file is not a database",
    "database disk image is malformed",
)


def is_transient(error: BaseException) -> bool:
    """Whether `error` is the database being out of reach or busy, so that the same work is
    worth trying again, rather than a fault of the statement or of the data it touched."""
    if isinstance(error, OSError):
        # A refused or lost connection reaches us unwrapped from the driver's connect.
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated or isinstance(error, InterfaceError):
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate:
        return sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    if isinstance(error.orig, sqlite3.DatabaseError):
        message = str(error.orig).lower()
        return any(transient in message for transient in SQLITE_TRANSIENT_MESSAGES)
    return isinstance(error, OperationalError)


def describe_fault(error: BaseException, limit: int = 300) -> str:
    """One line naming what went wrong, for a stored error: a database error's own message
    without the statement and its parameters, which may hold prompts."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line}"[:limit]


HEALTH_CHECK_SECONDS = 2.0


async def check_database(engine: AsyncEngine) -> str | None:
    """None when the database answers a query in time, else why it does not. On SQLite the
    query reads the file's header: `SELECT 1` reads nothing, and answers from a file that is
    not a database."""
    query = "PRAGMA schema_version" if engine.dialect.name == "sqlite" else "SELECT 1"
    try:
        async with asyncio.timeout(HEALTH_CHECK_SECONDS), engine.connect() as connection:
            await connection.execute(text(query))
    except TimeoutError:
        return f"no answer within {HEALTH_CHECK_SECONDS:g}s"
    except (OSError, SQLAlchemyError) as error:
        logger.warning("database check failed: %s", error)
        return f"unreachable ({type(error).__name__})"
    return None
