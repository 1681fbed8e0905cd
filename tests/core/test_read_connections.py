"""SQLite's readers (`core.read_connections`): the pool's guarantees without the pool. At most
`size` connections, each lent again only open and outside a transaction, one whose statement
failed closed, a read that cannot write, and none on a database a connection of their own would
not see."""

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from alembic import command
from apps.core.database import create_engine, create_read_engine, is_transient
from apps.core.read_connections import SqliteReaders, driver_reads
from tests.conftest import alembic_config, settings_for

# About a million steps of SQLite's VM: long enough for other reads to queue behind it.
SLOW_COUNT = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) "
    "SELECT count(*) FROM n"
)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'reads.db'}"
    command.upgrade(alembic_config(url), "head")
    return url


@pytest.fixture
async def engine(sqlite_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings_for(sqlite_url, tmp_path))
    yield create_read_engine(engine)
    await engine.dispose()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[aiosqlite.Connection]:
    """Every connection the readers open, in order."""
    connections: list[aiosqlite.Connection] = []
    connect = aiosqlite.connect

    def counted(*args: Any, **kwargs: Any) -> aiosqlite.Connection:
        connection = connect(*args, **kwargs)
        connections.append(connection)
        return connection

    monkeypatch.setattr(aiosqlite, "connect", counted)
    return connections


def worker_threads() -> set[threading.Thread]:
    """aiosqlite's connection threads alive now."""
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


async def threads_stopped(before: set[threading.Thread]) -> None:
    """Wait for the threads started since `before` to end. aiosqlite stops the thread of a
    connection that failed to open after raising, and that thread calls back into the event
    loop: the test's loop must outlive it."""
    for _ in range(100):
        if not worker_threads() - before:
            break
        await asyncio.sleep(0.01)
    assert not worker_threads() - before


async def closed(connection: aiosqlite.Connection) -> bool:
    """Whether `connection` is closed within a second (the readers close one given back in a
    task of its own)."""
    for _ in range(100):
        try:
            _ = connection.in_transaction
        # sqlite3.ProgrammingError while aiosqlite closes the connection, ValueError once it has.
        except (ValueError, sqlite3.ProgrammingError):
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.fixture
async def readers(engine: AsyncEngine) -> AsyncIterator[SqliteReaders]:
    async with driver_reads(engine, 2) as reads:
        assert reads.sqlite is not None
        yield reads.sqlite


async def test_reads_beyond_the_size_wait_for_a_connection_and_reuse_it(
    readers: SqliteReaders, opened: list[aiosqlite.Connection]
) -> None:
    counts = await asyncio.gather(*(readers.fetch_all(SLOW_COUNT, []) for _ in range(6)))

    assert counts == [[(300000,)]] * 6
    assert len(opened) == 2
    assert readers.opened == 2
    assert [row for (row,) in await readers.fetch_all("SELECT 1", [])] == [1]
    assert len(opened) == 2


async def test_a_connection_left_in_a_transaction_is_closed_not_lent_again(
    readers: SqliteReaders, opened: list[aiosqlite.Connection]
) -> None:
    await readers.fetch_all("BEGIN", [])
    assert await readers.fetch_all("SELECT 1", []) == [(1,)]

    assert len(opened) == 2
    assert await closed(opened[0])
    assert not opened[1].in_transaction
    assert readers.opened == 1


async def test_a_failed_statement_is_a_database_error_and_closes_its_connection(
    readers: SqliteReaders, opened: list[aiosqlite.Connection]
) -> None:
    with pytest.raises(DBAPIError, match="no such table") as raised:
        await readers.fetch_all("SELECT * FROM no_such_table WHERE id = ?", ["secret"])

    assert not is_transient(raised.value)
    assert "secret" not in str(raised.value)
    assert readers.opened == 0
    assert await readers.fetch_all("SELECT 1", []) == [(1,)]
    assert len(opened) == 2


async def test_a_reader_cannot_write(readers: SqliteReaders) -> None:
    with pytest.raises(DBAPIError, match="readonly database"):
        await readers.fetch_all("DELETE FROM runs", [])


async def test_a_reader_has_the_schemas_functions(readers: SqliteReaders) -> None:
    assert await readers.fetch_all("SELECT casefold(?)", ["STRASSE"]) == [("strasse",)]


@pytest.fixture
async def one_reader(engine: AsyncEngine) -> AsyncIterator[SqliteReaders]:
    """Readers of one connection: a read waits for the one before it."""
    async with driver_reads(engine, 1) as reads:
        assert reads.sqlite is not None
        yield reads.sqlite


async def test_a_cancelled_wait_gives_its_place_to_the_next(
    one_reader: SqliteReaders, opened: list[aiosqlite.Connection]
) -> None:
    slow = asyncio.create_task(one_reader.fetch_all(SLOW_COUNT, []))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(one_reader.fetch_all("SELECT 1", []))
    await asyncio.sleep(0)
    waiting.cancel()
    after = asyncio.create_task(one_reader.fetch_all("SELECT 2", []))

    assert await slow == [(300000,)]
    assert await after == [(2,)]
    assert waiting.cancelled()
    assert one_reader.opened == 1
    assert len(opened) == 1


async def test_a_waiter_cancelled_after_it_was_handed_the_connection_hands_it_on(
    one_reader: SqliteReaders, opened: list[aiosqlite.Connection]
) -> None:
    # Both queue while this read opens the one connection; the first is handed it as this
    # read ends, and is cancelled before it has resumed.
    handed = asyncio.create_task(one_reader.fetch_all("SELECT 1", []))
    after = asyncio.create_task(one_reader.fetch_all("SELECT 2", []))
    assert await one_reader.fetch_all("SELECT 0", []) == [(0,)]
    handed.cancel()

    assert await after == [(2,)]
    assert handed.cancelled()
    assert one_reader.opened == 1
    assert len(opened) == 1


async def test_a_read_cancelled_mid_statement_leaves_its_connection_to_the_next_read(
    one_reader: SqliteReaders, opened: list[aiosqlite.Connection]
) -> None:
    slow = asyncio.create_task(one_reader.fetch_all(SLOW_COUNT, []))
    await asyncio.sleep(0.01)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow

    assert await one_reader.fetch_all("SELECT 2", []) == [(2,)]
    assert one_reader.opened == 1
    assert len(opened) == 1


@pytest.fixture
async def unopenable(tmp_path: Path) -> AsyncIterator[SqliteReaders]:
    """Readers of one connection to a file that cannot be opened; every thread they started
    has stopped once they are closed."""
    before = worker_threads()
    readers = SqliteReaders((str(tmp_path / "no such directory" / "reads.db"),), {}, 1)
    try:
        yield readers
    finally:
        await readers.close()
    await threads_stopped(before)


async def test_a_connection_that_cannot_be_opened_is_a_database_error_and_frees_its_place(
    unopenable: SqliteReaders,
) -> None:
    for _ in range(2):
        with pytest.raises(DBAPIError, match="unable to open database file"):
            await asyncio.wait_for(unopenable.fetch_all("SELECT 1", []), timeout=5)
        assert unopenable.opened == 0


async def test_a_waiter_cancelled_after_it_was_handed_a_free_place_hands_it_on(
    unopenable: SqliteReaders,
) -> None:
    # Both queue while this read fails to open the one connection; its place is handed to the
    # first as the failure is raised, and that waiter is cancelled before it resumes.
    handed = asyncio.create_task(unopenable.fetch_all("SELECT 1", []))
    after = asyncio.create_task(unopenable.fetch_all("SELECT 2", []))
    with pytest.raises(DBAPIError, match="unable to open database file"):
        await unopenable.fetch_all("SELECT 0", [])
    handed.cancel()

    with pytest.raises(DBAPIError, match="unable to open database file"):
        await asyncio.wait_for(after, timeout=5)
    assert handed.cancelled()
    assert unopenable.opened == 0


async def test_closed_readers_close_their_connections_and_lend_none(
    engine: AsyncEngine, opened: list[aiosqlite.Connection]
) -> None:
    async with driver_reads(engine, 2) as reads:
        readers = reads.sqlite
        assert readers is not None
        await asyncio.gather(*(readers.fetch_all(SLOW_COUNT, []) for _ in range(2)))

    assert readers.opened == 0
    assert len(opened) == 2
    assert [await closed(connection) for connection in opened] == [True, True]
    with pytest.raises(RuntimeError, match="closed"):
        await readers.fetch_all("SELECT 1", [])


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite:///file:reads?mode=memory&cache=shared&uri=true",
        "postgresql+asyncpg://user@localhost/crew",
    ],
)
async def test_a_database_a_connection_of_their_own_would_not_see_has_no_readers(
    url: str,
) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    async with driver_reads(engine, 2) as reads:
        assert reads.sqlite is None
        assert reads.engine is engine
    await engine.dispose()
