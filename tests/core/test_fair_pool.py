"""PostgreSQL's pool lends first come, first served: a checkout arriving as a connection is given
back does not take it from one that was waiting, a wait that times out or is cancelled leaves
the pool whole, and a connection handed to a wait that has just ended goes to the next one."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from apps.core.database import create_engine
from apps.core.fair_pool import FirstComePool
from tests.conftest import postgres_server_url, settings_for


@pytest.fixture
async def one_connection(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on the test server whose pool has one connection, waited for at most 1 s."""
    url = postgres_server_url()
    settings = settings_for(url, tmp_path).model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 0}
    )
    engine = create_engine(settings)
    engine.sync_engine.pool._timeout = 1.0
    yield engine
    await engine.dispose()


async def _select_one(engine: AsyncEngine, name: str, order: list[str]) -> None:
    async with engine.connect() as connection:
        order.append(name)
        await connection.execute(text("SELECT 1"))


async def test_a_connection_given_back_goes_to_the_oldest_waiter(
    one_connection: AsyncEngine,
) -> None:
    assert isinstance(one_connection.sync_engine.pool, FirstComePool)
    order: list[str] = []
    holder = await one_connection.connect()
    waiting = asyncio.create_task(_select_one(one_connection, "waiting", order))
    await asyncio.sleep(0.05)
    # Given back, then asked for again at once, before the waiter has run.
    await holder.close()
    await _select_one(one_connection, "arriving", order)
    await waiting

    assert order == ["waiting", "arriving"]


async def test_a_wait_that_ends_leaves_the_pool_whole(one_connection: AsyncEngine) -> None:
    order: list[str] = []
    holder = await one_connection.connect()
    with pytest.raises(sqlalchemy.exc.TimeoutError):
        await _select_one(one_connection, "timed out", order)
    cancelled = asyncio.create_task(_select_one(one_connection, "cancelled", order))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await holder.close()

    await _select_one(one_connection, "after", order)
    assert order == ["after"]
    assert one_connection.sync_engine.pool.checkedout() == 0


async def test_a_connection_handed_to_a_wait_as_it_is_cancelled_goes_to_the_next(
    one_connection: AsyncEngine,
) -> None:
    order: list[str] = []
    holder = await one_connection.connect()
    first = asyncio.create_task(_select_one(one_connection, "first", order))
    second = asyncio.create_task(_select_one(one_connection, "second", order))
    await asyncio.sleep(0.05)
    # The connection is handed to the first wait, which is cancelled before it runs.
    pool_queue = one_connection.sync_engine.pool._pool
    returned = pool_queue.put_nowait
    pool_queue.put_nowait = lambda item: (returned(item), first.cancel())  # type: ignore[method-assign]
    await holder.close()
    pool_queue.put_nowait = returned  # type: ignore[method-assign]
    await asyncio.gather(first, second, return_exceptions=True)

    assert first.cancelled()
    assert order == ["second"]
    assert one_connection.sync_engine.pool.checkedout() == 0
