"""A PostgreSQL connection pool that lends in the order connections were asked for, and closes
the connections a burst opened once they have sat idle for a while.

First come, first served. SQLAlchemy's asyncio pool (`AsyncAdaptedQueuePool`) keeps its idle
connections in an `asyncio.Queue`, and a checkout takes one that is there without waiting. A
connection given back wakes the oldest waiter, but until that waiter runs, a request arriving
meanwhile takes it; the waiter then finds the queue empty and waits again at the back. Under a
load of more requests than connections some requests wait many times longer than the rest: on
the read benchmark, PostgreSQL's events pages at c=32 on 15 connections had a p99 of 0.6 s and
requests over wrk's 2 s timeout. Here a connection given back goes straight to the oldest
waiter, and a checkout takes an idle connection only when nobody waits, which is the only time
one is idle.

Idle connections. SQLAlchemy closes a connection beyond `pool_size` (an overflow one) as soon
as it is given back, and at 32 concurrent reads on 5 + 10 connections that meant PostgreSQL
sessions opened and closed all through the load, which cost more than the reads. Keeping every
connection for ever instead left a deployment holding what its past bursts opened, past
PostgreSQL's `max_connections`. Here every connection given back is kept, and one beyond
`pool_size` is closed once it has sat idle `idle_seconds` (HikariCP's `idleTimeout` above
`minimumIdle`, psycopg_pool's `max_idle` above `min_size`), by a timer on the event loop: a
process gone quiet shrinks too, with no checkout or check-in to trigger it.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, QueuePool
from sqlalchemy.util import await_, greenlet_spawn
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

# How long a connection beyond the pool's size may sit idle before it is closed, by default
# (DB_POOL_IDLE_SECONDS). A minute: bursts seconds or tens of seconds apart (a dashboard's
# refresh, the read benchmark's loads) keep their connections, and what a burst opened is not
# held long past it. HikariCP, psycopg_pool and pgbouncer wait ten minutes, for a pool in front
# of a server sized for it; here several processes each hold two pools on a server whose default
# `max_connections` is 100, and opening a connection again costs a few milliseconds, at most
# once a minute.
IDLE_SECONDS = 60.0


class FirstComeQueue(AsyncAdaptedQueue[ConnectionPoolEntry]):
    """The pool's queue of idle connections, which hands each one given back to the oldest
    checkout waiting for one, and keeps every other one with the time it was given back. Used
    on the event loop only, as the asyncio pool is."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        # Oldest given back first, each with when (`time.monotonic()`): lent from either end,
        # so the first is always the one idle longest.
        self._idle: deque[tuple[ConnectionPoolEntry, float]] = deque()
        self._waiters: deque[asyncio.Future[ConnectionPoolEntry]] = deque()
        # Called when a connection given back is kept idle (`FirstComePool`'s timer).
        self.on_idle: Callable[[], None] | None = None

    def empty(self) -> bool:
        return not self._idle

    def full(self) -> bool:
        # Never: the pool gives back at most the connections it opened, and it closes the ones
        # beyond its size once idle for long (`FirstComePool`), not as they are given back.
        return False

    def qsize(self) -> int:
        return len(self._idle)

    def put_nowait(self, item: ConnectionPoolEntry) -> None:
        if self.hand_over(item):
            return
        self._idle.append((item, time.monotonic()))
        if self.on_idle is not None:
            self.on_idle()

    def put(self, item: ConnectionPoolEntry, block: bool = True, timeout: Any = None) -> None:
        # Never waits: the queue is never full.
        self.put_nowait(item)

    def hand_over(self, item: ConnectionPoolEntry) -> bool:
        """Hand `item` to the oldest checkout still waiting; False when none is."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return True
        return False

    def get_nowait(self) -> ConnectionPoolEntry:
        if not self._idle:
            raise Empty()
        item, _since = self._idle.pop() if self.use_lifo else self._idle.popleft()
        return item

    def get(self, block: bool = True, timeout: float | None = None) -> ConnectionPoolEntry:
        if self._idle or not block:
            return self.get_nowait()
        waiter: asyncio.Future[ConnectionPoolEntry] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await_(self._wait(waiter, seconds=timeout))
        except TimeoutError:
            raise Empty() from None

    async def _wait(
        self, waiter: asyncio.Future[ConnectionPoolEntry], *, seconds: float | None
    ) -> ConnectionPoolEntry:
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except BaseException:
            # Handed a connection as the wait ended (timed out, cancelled): it goes to the next.
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())
            else:
                waiter.cancel()
            raise

    def idle_since(self) -> float | None:
        """When the connection idle longest was given back; None when none is idle."""
        return self._idle[0][1] if self._idle else None

    def take_idle(self, given_back_by: float, most: int) -> list[ConnectionPoolEntry]:
        """Up to `most` of the connections idle since `given_back_by` or before, longest idle
        first, taken out of the queue: no checkout is lent them any more."""
        taken: list[ConnectionPoolEntry] = []
        while len(taken) < most and self._idle and self._idle[0][1] <= given_back_by:
            taken.append(self._idle.popleft()[0])
        return taken


class FirstComePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio pool, lending first come, first served (`FirstComeQueue`), keeping
    the connections it opens beyond `pool_size` until each has sat idle `idle_seconds`.

    `idle_seconds` is a keyword of `create_async_engine` too, which hands the pool class's own
    arguments to it. The pool never holds more than `pool_size + max_overflow` connections: one
    being closed still counts until it is closed, is out of the queue, and is never lent; a
    checkout that waits meanwhile is handed its place, and opens a connection in it.

    SQLAlchemy has no public way to give a pool a queue of one's own, or to close one of its
    idle connections. Three private parts of `QueuePool` are used for it, in this class only:
    `_queue_class` (the queue it builds), `_pool` (that queue) and `_dec_overflow` (its count of
    the connections it may still open, as `QueuePool` itself keeps it).
    """

    _queue_class = FirstComeQueue
    _pool: FirstComeQueue

    def __init__(self, creator: Any, idle_seconds: float = IDLE_SECONDS, **kw: Any) -> None:
        super().__init__(creator, **kw)
        self._idle_seconds = idle_seconds
        self._pool.on_idle = self._close_idle_later
        self._timer: asyncio.TimerHandle | None = None
        # Connections taken out of the queue to be closed, each by a task of its own, and how
        # many of them still count among the pool's connections.
        self._closing: set[asyncio.Task[None]] = set()
        self._retiring = 0

    @property
    def idle_seconds(self) -> float:
        return self._idle_seconds

    def _surplus(self) -> int:
        """Connections open beyond `pool_size`, not counting those being closed."""
        return self.overflow() - self._retiring

    def _close_idle_later(self) -> None:
        """Have the timer close the connection idle longest when its time comes, if the pool
        holds more than its size; called as one is kept idle, and after each round."""
        if self._timer is not None or self._surplus() <= 0:
            return
        since = self._pool.idle_since()
        if since is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Given back off the loop (the garbage collector's check-in): the next one given
            # back on the loop sets the timer.
            return
        delay = since + self._idle_seconds - time.monotonic()
        self._timer = loop.call_later(max(delay, 0.0), self._close_idle)

    def _close_idle(self) -> None:
        """The timer: close the connections beyond the pool's size idle for long enough."""
        self._timer = None
        given_back_by = time.monotonic() - self._idle_seconds
        loop = asyncio.get_running_loop()
        for record in self._pool.take_idle(given_back_by, self._surplus()):
            self._retiring += 1
            closing = loop.create_task(greenlet_spawn(self._retire, record))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self._close_idle_later()

    def _retire(self, record: ConnectionPoolEntry) -> None:
        """Close `record`'s connection (asyncpg's close awaits the server: run in a greenlet),
        then give its place back: to a checkout waiting, which opens a connection in it (a
        closed entry reconnects when lent), or to the pool's count of connections.

        As `QueuePool` does with an overflow connection given back when its queue is full."""
        try:
            record.close()
        finally:
            self._retiring -= 1
            if not self._pool.hand_over(record):
                self._dec_overflow()

    def dispose(self) -> None:
        """Close the idle connections, after the ones being closed are (in a greenlet, as
        `AsyncEngine.dispose` runs this)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        closing = [task for task in self._closing if not task.done()]
        if closing:
            with contextlib.suppress(Exception):
                await_(asyncio.wait(closing))
        super().dispose()

    def recreate(self) -> QueuePool:
        # `QueuePool.recreate` passes the arguments it knows of (`Engine.dispose` recreates).
        pool = super().recreate()
        assert isinstance(pool, FirstComePool)
        pool._idle_seconds = self._idle_seconds
        return pool
