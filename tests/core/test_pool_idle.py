"""PostgreSQL's pools give back what a burst opened once it has sat idle: every connection stays
while bursts come back within the idle time, the ones beyond DB_POOL_SIZE close after it with no
request to trigger it, and the pool opens connections again at the next burst. Counted by the
server (`pg_stat_activity` on a database of the test's own), and by the pool's own status."""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_

from apps.core.database import Transactions, create_engine
from apps.core.fair_pool import FirstComePool
from apps.core.settings import Settings
from tests.conftest import empty_database_url, postgres_dsn, postgres_server_url, settings_for

FLOOR = 2
BURST = 6
# Bursts a third of it apart leave a second of margin to a machine that stalls.
IDLE_SECONDS = 1.5
# What a test waits at most for the server to see a connection closed or opened.
SETTLE_SECONDS = 10.0


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    """An empty PostgreSQL database of the test's own: its connections are the test's alone."""
    yield from empty_database_url("postgresql", tmp_path)


@pytest.fixture
def settings(database: str, tmp_path: Path) -> Settings:
    return settings_for(database, tmp_path).model_copy(
        update={
            "db_pool_size": FLOOR,
            "db_max_overflow": BURST - FLOOR,
            "db_pool_idle_seconds": IDLE_SECONDS,
        }
    )


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture
async def admin(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the server's own database, which reads who is connected to the test's."""
    connection = await asyncpg.connect(postgres_dsn(postgres_server_url()))
    yield connection
    await connection.close()


async def backends(admin: asyncpg.Connection, database: str) -> list[int]:
    """The server processes connected to `database`: one per open connection."""
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 ORDER BY pid",
        make_url(database).database,
    )
    return [row["pid"] for row in rows]


async def until_count(admin: asyncpg.Connection, database: str, count: int) -> float:
    """Wait until the server counts `count` connections to `database`; how long it took."""
    started = time.monotonic()
    while len(await backends(admin, database)) != count:
        assert time.monotonic() - started < SETTLE_SECONDS, await backends(admin, database)
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def burst(engine: AsyncEngine, size: int = BURST) -> None:
    """`size` reads at once, each holding its connection for a tenth of a second."""

    async def read() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_sleep(0.1)"))

    await asyncio.gather(*(read() for _ in range(size)))


def pool_of(engine: AsyncEngine) -> FirstComePool:
    pool = engine.sync_engine.pool
    assert isinstance(pool, FirstComePool)
    return pool


def assert_status(pool: FirstComePool, *, idle: int, lent: int = 0) -> None:
    """The pool counts `idle` + `lent` connections, beyond its size by what exceeds FLOOR."""
    assert (pool.checkedin(), pool.checkedout()) == (idle, lent), pool.status()
    assert pool.overflow() == idle + lent - FLOOR, pool.status()
    assert pool.size() == FLOOR


async def test_a_burst_s_connections_close_once_idle_with_no_request(
    engine: AsyncEngine, database: str, admin: asyncpg.Connection
) -> None:
    await burst(engine)
    opened = await backends(admin, database)
    assert len(opened) == BURST
    assert_status(pool_of(engine), idle=BURST)

    # Bursts a third of the idle time apart, for twice the idle time: not one is closed.
    deadline = time.monotonic() + 2 * IDLE_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(IDLE_SECONDS / 3)
        await burst(engine)
        assert await backends(admin, database) == opened
    quiet_since = time.monotonic()

    # Then nothing: the extra connections close after the idle time, the floor stays.
    await until_count(admin, database, FLOOR)
    assert time.monotonic() - quiet_since >= IDLE_SECONDS
    assert set(await backends(admin, database)) < set(opened)
    assert_status(pool_of(engine), idle=FLOOR)

    # The next burst opens them again, and is served.
    await burst(engine)
    assert len(await backends(admin, database)) == BURST
    assert_status(pool_of(engine), idle=BURST)


async def test_a_trickle_of_requests_keeps_only_the_connections_it_uses(
    engine: AsyncEngine, database: str, admin: asyncpg.Connection
) -> None:
    """The connection given back last is lent first, so one read at a time leaves the others
    idle; lent in turn, it would have kept every connection of the burst open for ever."""
    await burst(engine)
    deadline = time.monotonic() + 3 * IDLE_SECONDS
    while time.monotonic() < deadline:
        await burst(engine, size=1)
    assert len(await backends(admin, database)) == FLOOR
    assert_status(pool_of(engine), idle=FLOOR)


async def test_a_checkout_waiting_while_idle_connections_close_opens_one_in_their_place(
    database: str, tmp_path: Path, admin: asyncpg.Connection
) -> None:
    """With every connection the pool may open either lent or being closed, a checkout waits;
    the closed one's place is handed to it rather than waiting for one to be given back."""
    settings = settings_for(database, tmp_path).model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 1, "db_pool_idle_seconds": 0.3}
    )
    engine = create_engine(settings)
    pool = pool_of(engine)
    pool._timeout = 5.0
    closing = asyncio.Event()

    @event.listens_for(pool, "close")
    def _slow_close(_dbapi_connection: object, _record: ConnectionPoolEntry) -> None:
        # The pool closes in a greenlet: a slow server's answer to the close, in it.
        closing.set()
        await_(asyncio.sleep(0.5))

    try:
        await burst(engine, size=2)
        async with engine.connect() as held:
            await asyncio.wait_for(closing.wait(), timeout=SETTLE_SECONDS)
            assert pool.checkedin() == 0 and pool.overflow() == 1

            async with asyncio.timeout(2.0), engine.connect() as waited:
                await waited.execute(text("SELECT 1"))
                assert pool.checkedout() == 2
            await held.execute(text("SELECT 1"))
        assert len(await backends(admin, database)) == 2
        assert (pool.checkedout(), pool.overflow()) == (0, 1), pool.status()
    finally:
        await engine.dispose()
    await until_count(admin, database, 0)


def _sleep(session: Session) -> None:
    session.execute(text("SELECT pg_sleep(0.1)"))


async def test_the_transactions_pool_gives_back_its_burst_too(
    engine: AsyncEngine,
    settings: Settings,
    database: str,
    admin: asyncpg.Connection,
) -> None:
    transactions = Transactions(
        engine,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        idle_seconds=settings.db_pool_idle_seconds,
    )
    try:
        await asyncio.gather(*(transactions.run(_sleep) for _ in range(BURST)))
        assert len(await backends(admin, database)) == BURST
        await until_count(admin, database, FLOOR)
        await asyncio.gather(*(transactions.run(_sleep) for _ in range(BURST)))
        assert len(await backends(admin, database)) == BURST
    finally:
        await transactions.close()
    await until_count(admin, database, 0)


async def test_the_pool_an_engine_gets_when_disposed_closes_idle_connections_too(
    engine: AsyncEngine,
) -> None:
    await engine.dispose()
    assert pool_of(engine).idle_seconds == IDLE_SECONDS


def test_sqlite_s_pool_is_its_own(tmp_path: Path) -> None:
    """SQLite keeps DB_POOL_SIZE connections and opens none beyond: nothing to close when idle."""
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'idle.db'}", tmp_path)
    engine = create_engine(settings)
    pool = engine.sync_engine.pool
    assert not isinstance(pool, FirstComePool)
    assert pool.size() == settings.db_pool_size  # type: ignore[attr-defined]
    engine.sync_engine.dispose()
