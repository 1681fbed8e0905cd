"""The SQLite transactions' writer, which keeps its connection from one transaction to the
next: a transaction that fails leaves nothing behind, for the next one or for other writers."""

import sqlite3
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
