"""SQLite connections given back to the pool: what a connection left open is rolled back, and
one that holds no transaction (a read that called the driver itself) is handed back without a
rollback, each of which is a hand-off to aiosqlite's thread. A runs page takes none of the pool's
connections (`core.read_connections`), so it costs no rollback either."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command
from apps.core.database import create_engine
from tests.conftest import alembic_config, served, settings_for


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}"
    command.upgrade(alembic_config(url), "head")
    return url


@pytest.fixture
async def engine(sqlite_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings_for(sqlite_url, tmp_path))
    yield engine
    await engine.dispose()


@pytest.fixture
def rollbacks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each rollback of an aiosqlite connection, with whether it held a transaction."""
    calls: list[bool] = []
    rollback = AsyncAdapt_aiosqlite_connection.rollback

    def counted(self: Any) -> None:
        calls.append(self._connection.in_transaction)
        rollback(self)

    monkeypatch.setattr(AsyncAdapt_aiosqlite_connection, "rollback", counted)
    return calls


async def test_a_transaction_left_open_is_rolled_back_when_its_connection_is_given_back(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        await driver.execute("BEGIN IMMEDIATE")
        await driver.execute("CREATE TABLE left_open (x)")
        assert driver.in_transaction

    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert not driver.in_transaction
        tables = await connection.scalars(
            text("SELECT name FROM sqlite_master WHERE name = 'left_open'")
        )
        assert list(tables) == []
    # The write lock went with the rollback: another connection may write.
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE written_after (x)"))


async def test_a_connection_that_holds_no_transaction_is_given_back_without_a_rollback(
    engine: AsyncEngine, rollbacks: list[bool]
) -> None:
    async with engine.connect():
        pass
    rollbacks.clear()  # the engine's first connection is rolled back after its dialect's set-up

    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert list(await driver.execute_fetchall("SELECT count(*) FROM runs")) == [(0,)]
        assert not driver.in_transaction

    assert rollbacks == []


async def test_a_runs_page_costs_no_rollback(
    sqlite_url: str, tmp_path: Path, rollbacks: list[bool]
) -> None:
    async with served(settings_for(sqlite_url, tmp_path)) as client:
        posted = await client.post("/tasks", json={"title": "paged", "task_spec": {"type": "demo"}})
        assert posted.status_code == 202
        rollbacks.clear()
        pages = [await client.get("/runs?limit=50") for _ in range(3)]

    assert [page.status_code for page in pages] == [200, 200, 200]
    assert pages[0].json()["items"][0]["title"] == "paged"
    assert rollbacks == []


async def test_reads_one_at_a_time_are_served_by_the_connection_given_back_last(
    engine: AsyncEngine,
) -> None:
    """Once a burst has opened several connections, one read at a time keeps to one of them:
    each connection a read passes through fills a page cache of its own."""
    held = [await engine.connect() for _ in range(3)]
    burst = [
        (await held_connection.get_raw_connection()).driver_connection for held_connection in held
    ]
    for connection in held:
        await connection.close()

    lent = []
    for _ in range(4):
        async with engine.connect() as connection:
            lent.append((await connection.get_raw_connection()).driver_connection)
            await connection.execute(text("SELECT count(*) FROM runs"))

    assert len({id(driver) for driver in burst}) == 3
    assert lent == [burst[-1]] * 4
