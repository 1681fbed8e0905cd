"""What wakes the event feed: something that knows when new events may have been committed.

A source calls `poke` whenever new events may be in the database; the feed coalesces the pokes
and reads once. Sources run as tasks of the feed and are cancelled when it stops.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from apps.core.database import (
    CONNECT_TIMEOUT_SECONDS,
    PING_TIMEOUT_SECONDS,
    TRANSIENT_SQLSTATE_CLASSES,
    Transactions,
    describe_fault,
)
from apps.core.fault_log import STILL_FAILING_LOG_SECONDS, FaultStreak

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger(__name__)

Poke = Callable[[], None]
# The channel the schema's trigger notifies when events commit (PostgreSQL).
EVENTS_CHANNEL = "crew_events"


class WakeSource(Protocol):
    """Something that knows when new events may have been committed."""

    async def watch(self, poke: Poke) -> None:
        """Call `poke` whenever new events may be in the database; run until cancelled."""


@dataclass(frozen=True, slots=True)
class CommitWake:
    """Commits made through `engine`, in this process.

    The engine's "commit" event fires just before the COMMIT is sent, when a read would not see
    the transaction yet. So a commit only marks its connection, and the poke comes when that
    connection is checked back in to the pool, which happens once the commit is done: a Session
    releases its connection when it commits, `engine.begin()` when its block ends. A connection
    that commits and stays checked out is seen when it is returned, or by the poll.
    """

    engine: AsyncEngine

    async def watch(self, poke: Poke) -> None:
        committed = object()  # a mark of this watch's own: others on the engine keep theirs

        def mark(connection: Connection) -> None:
            connection.info[committed] = True

        def returned(_dbapi_connection: Any, record: ConnectionPoolEntry | None) -> None:
            if record is not None and record.info.pop(committed, False):
                poke()

        engine = self.engine.sync_engine
        event.listen(engine, "commit", mark)
        event.listen(engine, "checkin", returned)
        try:
            await asyncio.Future()
        finally:
            event.remove(engine, "commit", mark)
            event.remove(engine, "checkin", returned)


@dataclass(frozen=True, slots=True)
class TransactionsWake:
    """Transactions this process commits through `Transactions` (a worker's passes, operators'
    decisions): on SQLite they run on a writer thread of their own, outside `engine`."""

    transactions: Transactions

    async def watch(self, poke: Poke) -> None:
        stop = self.transactions.on_commit(poke)
        try:
            await asyncio.Future()
        finally:
            stop()


@dataclass(frozen=True, slots=True)
class NotifyWake:
    """PostgreSQL's NOTIFY crew_events, which the schema sends when events commit (its payload
    is the highest event id; the feed reads from the database anyway): events written by any
    process, on any host, within milliseconds. Its own connection, re-opened when it is lost,
    with a poke then for what was written meanwhile.

    A connection that goes quiet is checked every `check_seconds`: one whose peer stopped
    answering without closing (a partition, a failover that drops packets) reports nothing, and
    was listened on for good while every wake came from the poll.

    While the database is out of reach it tries again every `retry_seconds`, and says so as a
    `FaultStreak`: a warning when it starts, one every `still_failing_log_seconds`, one line when
    it listens again. Another failure of the connection (a password refused, a database that
    does not exist) is a warning every time."""

    dsn: str
    retry_seconds: float = 1.0
    check_seconds: float = 30.0
    still_failing_log_seconds: float = STILL_FAILING_LOG_SECONDS

    async def watch(self, poke: Poke) -> None:
        # Imported here, as SQLAlchemy's dialect imports it: a process on SQLite never loads
        # the driver (2.6 MB of its memory).
        import asyncpg

        faults = FaultStreak(
            "event notifications listener", logger, interval=self.still_failing_log_seconds
        )
        while True:
            try:
                connection = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT_SECONDS)
                await self._listen(connection, poke, faults.over)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                if _out_of_reach(error):
                    then = "listening again in %gs: %s"
                    faults.transient(then, self.retry_seconds, describe_fault(error))
                else:
                    faults.unexpected()
                    logger.warning("event notifications lost, listening again: %s", error)
            await asyncio.sleep(self.retry_seconds)

    async def _listen(
        self, connection: "asyncpg.Connection", poke: Poke, listening: Callable[[], None]
    ) -> None:
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        try:
            await connection.add_listener(EVENTS_CHANNEL, lambda *_: poke())
            listening()
            poke()
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), self.check_seconds)
                except TimeoutError:
                    await connection.execute(";", timeout=PING_TIMEOUT_SECONDS)
        finally:
            await connection.close(timeout=1)


def _out_of_reach(error: Exception) -> bool:
    """Whether an error of asyncpg's own (`is_transient` knows SQLAlchemy's) is the server out
    of reach or busy: a refused or lost connection (a bare InterfaceError: "connection is
    closed"; its subclasses are settings the client refuses), or an error of a class that says
    so (08 connection, 53 resources, 57 shutting down, ...)."""
    import asyncpg

    if isinstance(error, asyncpg.PostgresError):
        return (error.sqlstate or "")[:2] in TRANSIENT_SQLSTATE_CLASSES
    return isinstance(error, OSError) or type(error) is asyncpg.InterfaceError


@dataclass(frozen=True, slots=True)
class PollWake:
    """Every `seconds`: the fallback for events other processes commit."""

    seconds: float

    async def watch(self, poke: Poke) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            poke()
