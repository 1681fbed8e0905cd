"""The SQLite transactions' writer, which keeps its connection from one transaction to the
next: a transaction that fails leaves nothing behind, for the next one or for other writers."""

import asyncio
import contextvars
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from apps.core.database import Transactions


class Refused(Exception):
    pass


def insert(session: Session, value: int) -> None:
    session.execute(text("INSERT INTO items (value) VALUES (:value)"), {"value": value})


def insert_then_fail(session: Session, value: int) -> None:
    insert(session, value)
    raise Refused


def fail_on_driver(session: Session) -> None:
    # A constraint the driver refuses: the transaction is then rolled back by the writer.
    session.execute(text("INSERT INTO items (value) VALUES (NULL)"))


def values(path: Path) -> list[int]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT value FROM items ORDER BY value")]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "writer.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE items (value INTEGER NOT NULL)")
    return path


async def test_a_failed_transaction_is_rolled_back_and_the_next_one_commits(
    database: Path,
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    transactions = Transactions(engine)
    try:
        await transactions.run(insert, 1)
        with pytest.raises(Refused):
            await transactions.run(insert_then_fail, 2)
        with pytest.raises(Exception, match="NOT NULL"):
            await transactions.run(fail_on_driver)
        await transactions.run(insert, 3)
        assert values(database) == [1, 3]
        # No transaction is left open between two: another writer takes the lock at once.
        with sqlite3.connect(database, timeout=0) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO items (value) VALUES (4)")
        assert values(database) == [1, 3, 4]
    finally:
        await transactions.close()
        await engine.dispose()


@pytest.fixture
async def transactions(database: Path) -> AsyncIterator[Transactions]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    transactions = Transactions(engine)
    try:
        yield transactions
    finally:
        await transactions.close()
        await engine.dispose()


CALLER = contextvars.ContextVar("caller", default="nobody")


def where_it_ran(session: Session, ran: list[tuple[str, str]], name: str) -> str:
    ran.append((name, threading.current_thread().name))
    return CALLER.get()


async def test_each_transaction_runs_on_the_writers_thread_in_order_with_its_callers_context(
    transactions: Transactions,
) -> None:
    ran: list[tuple[str, str]] = []

    async def call(name: str) -> str:
        CALLER.set(name)
        return await transactions.run(where_it_ran, ran, name)

    answers = await asyncio.gather(*(call(f"call {index}") for index in range(5)))
    assert answers == [f"call {index}" for index in range(5)]
    assert [name for name, _ in ran] == answers
    assert {thread for _, thread in ran} == {"sqlite-writer"}


async def test_a_transaction_given_up_before_it_began_never_runs(
    transactions: Transactions, database: Path
) -> None:
    holding, release = threading.Event(), threading.Event()

    def hold(session: Session) -> None:
        holding.set()
        release.wait(5)

    first = asyncio.create_task(transactions.run(hold))
    await asyncio.to_thread(holding.wait, 5)
    given_up = asyncio.create_task(transactions.run(insert, 1))
    await asyncio.sleep(0)
    given_up.cancel()
    release.set()
    await first
    await transactions.run(insert, 2)
    assert given_up.cancelled()
    assert values(database) == [2]


async def test_a_transaction_whose_caller_left_while_it_ran_still_commits(
    transactions: Transactions, database: Path
) -> None:
    running, release = threading.Event(), threading.Event()

    def insert_slowly(session: Session, value: int) -> None:
        running.set()
        release.wait(5)
        insert(session, value)

    left = asyncio.create_task(transactions.run(insert_slowly, 1))
    await asyncio.to_thread(running.wait, 5)
    left.cancel()
    release.set()
    # The next transaction runs after it on the same thread: by then it has committed.
    await transactions.run(insert, 2)
    assert left.cancelled()
    assert values(database) == [1, 2]


async def test_close_ends_the_writers_thread(database: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    transactions = Transactions(engine)
    before = {thread.name for thread in threading.enumerate()}
    await transactions.run(insert, 1)
    assert "sqlite-writer" in {thread.name for thread in threading.enumerate()} - before
    await transactions.close()
    await engine.dispose()
    assert "sqlite-writer" not in {thread.name for thread in threading.enumerate()} - before
