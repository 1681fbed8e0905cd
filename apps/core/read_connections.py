"""Where a read that calls the driver itself runs: on a SQLite file, on readers of its own.

A runs page is one statement handed to aiosqlite's thread at once (`reading.run_pages`). Taken
through the engine's pool, the connection cost as much again on the event loop: the checkout and
the check-in each in a greenlet, the pool's records and events, the connection's wrappers, and
while the pool is busy a wait through `asyncio.timeout` inside a greenlet. `SqliteReaders` lends
its connections without any of it: an idle one is taken without awaiting, a busy pool is waited
for in order, and the statement is the one hand-off to the connection's thread and back.

Its guarantees are the pool's: at most `size` connections, opened as reads need them; one is
lent again only as it was lent (open, outside any transaction), any other is closed; one whose
statement failed is closed too, and its place goes to a new connection when one is next needed.
Its connections cannot write (`PRAGMA query_only`), so a read never takes SQLite's write lock.
"""

import asyncio
import contextlib
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiosqlite
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from apps.core.database import SQLITE_BUSY_TIMEOUT_MS, register_sqlite_functions


class _ReaderConnection(sqlite3.Connection):
    """A connection that reads: the schema's functions, and no write, ever."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        register_sqlite_functions(self)
        self.execute("PRAGMA query_only = ON")


class SqliteReaders:
    """Up to `size` reading connections to one SQLite file, each one statement at a time."""

    def __init__(
        self, connect_args: Sequence[Any], connect_kwargs: Mapping[str, Any], size: int
    ) -> None:
        self._connect_args = tuple(connect_args)
        self._connect_kwargs = {
            **connect_kwargs,
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            # No implicit BEGIN: a statement reads in a transaction of its own, ended with it.
            "isolation_level": None,
            "check_same_thread": False,
            "factory": _ReaderConnection,
        }
        self._size = size
        self._opened = 0
        # The connection given back last is lent first: its thread and caches are warm.
        self._idle: list[aiosqlite.Connection] = []
        # Each waiter is handed a connection, or None to open one in the place of one closed.
        self._waiting: deque[asyncio.Future[aiosqlite.Connection | None]] = deque()
        # Connections being closed after they were given back, kept until they are.
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def opened(self) -> int:
        """Connections open or lent now."""
        return self._opened

    async def fetch_all(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        """Every row of `sql`, run on one connection in one hand-off to its thread. A driver's
        error is raised as SQLAlchemy raises one (a `DBAPIError`, which the API answers 503
        when it is transient)."""
        connection = self._idle.pop() if self._idle else await self._lend()
        try:
            rows = await connection.execute_fetchall(sql, parameters)
        except asyncio.CancelledError:
            # The statement runs on to its end on the connection's thread, where the next one
            # lent it waits for it: it is left as clean as any other.
            self._give_back(connection)
            raise
        except BaseException as error:
            self._free_a_place()
            await _close_quietly(connection)
            if isinstance(error, sqlite3.Error):
                raise sqlite_error(sql, parameters, error) from error
            raise
        self._give_back(connection)
        return list(rows)

    async def _lend(self) -> aiosqlite.Connection:
        while True:
            if self._closed:
                raise RuntimeError("the SQLite readers are closed")
            if self._opened < self._size:
                return await self._open()
            waiter: asyncio.Future[aiosqlite.Connection | None]
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                connection = await waiter
            except asyncio.CancelledError:
                self._pass_on(waiter)
                raise
            if connection is not None:
                return connection

    async def _open(self) -> aiosqlite.Connection:
        self._opened += 1
        try:
            return await aiosqlite.connect(*self._connect_args, **self._connect_kwargs)
        except BaseException as error:
            self._opened -= 1
            self._wake_one(None)
            if isinstance(error, sqlite3.Error):
                raise sqlite_error(None, None, error) from error
            raise

    def _pass_on(self, waiter: asyncio.Future[aiosqlite.Connection | None]) -> None:
        """A waiter cancelled: what it was handed, if anything, goes to the next one."""
        if waiter.done() and not waiter.cancelled():
            handed = waiter.result()
            if handed is None:
                self._wake_one(None)
            else:
                self._give_back(handed)
        else:
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiter)

    def _give_back(self, connection: aiosqlite.Connection) -> None:
        if self._closed or not _clean(connection):
            self._free_a_place()
            closing = asyncio.get_running_loop().create_task(_close_quietly(connection))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        elif not self._wake_one(connection):
            self._idle.append(connection)

    def _wake_one(self, handed: aiosqlite.Connection | None) -> bool:
        """Hand `handed` (None: a place to open one in) to the first waiter still waiting."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(handed)
                return True
        return False

    def _free_a_place(self) -> None:
        """A connection leaves the pool (its caller closes it): a new one may take its place."""
        self._opened -= 1
        self._wake_one(None)

    async def close(self) -> None:
        """Close the idle connections now, and each lent one when it is given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            self._free_a_place()
            await _close_quietly(connection)
        while self._waiting:
            self._waiting.popleft().cancel()
        await asyncio.gather(*self._closing)


async def _close_quietly(connection: aiosqlite.Connection) -> None:
    # Closing is all that is left to do with it: a failure to close changes nothing.
    with contextlib.suppress(Exception):
        await connection.close()


def _clean(connection: aiosqlite.Connection) -> bool:
    """Whether `connection` is open and outside any transaction."""
    try:
        return not connection.in_transaction
    except (ValueError, sqlite3.ProgrammingError):  # closed
        return False


def sqlite_error(
    sql: str | None, parameters: Sequence[Any] | None, error: sqlite3.Error
) -> StatementError:
    """`error`, which sqlite3 raised running `sql`, as SQLAlchemy raises it: a DBAPIError of the
    class SQLAlchemy gives the driver's (OperationalError, ...), its parameters hidden."""
    return DBAPIError.instance(sql, parameters, error, sqlite3.Error, hide_parameters=True)


@dataclass(frozen=True, slots=True)
class DriverReads:
    """What a read that calls the driver itself is handed: the read engine, and on a SQLite
    file the readers its statement runs on instead of a connection of the engine's pool."""

    engine: AsyncEngine
    sqlite: SqliteReaders | None


@asynccontextmanager
async def driver_reads(engine: AsyncEngine, size: int) -> AsyncIterator[DriverReads]:
    """The reads of `engine` (the read engine), with SQLite readers of `size` connections on a
    SQLite file; closed when done. An in-memory database has none: a connection of their own
    would open another database."""
    url = engine.url
    on_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if not on_file or url.query.get("mode") == "memory":
        yield DriverReads(engine, None)
        return
    connect_args, connect_kwargs = engine.dialect.create_connect_args(url)
    readers = SqliteReaders(connect_args, connect_kwargs, size)
    try:
        yield DriverReads(engine, readers)
    finally:
        await readers.close()
