"""On PostgreSQL, event ids follow commit order, and every insert of events is announced."""

import asyncio
import uuid

import asyncpg
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from apps.orchestrator.model.models import Event, Run
from tests.conftest import postgres_dsn


async def _insert_event(engine: AsyncEngine, run_id: uuid.UUID) -> int:
    async with engine.begin() as connection:
        result = await connection.execute(
            insert(Event.__table__).returning(Event.id),
            {"run_id": run_id, "type": "test.event", "data": {}},
        )
        return result.scalar_one()


async def _a_run(engine: AsyncEngine) -> uuid.UUID:
    run_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(Run.__table__),
            {"id": run_id, "title": "t", "status": "queued", "task_spec": {}},
        )
    return run_id


async def test_an_insert_of_events_waits_for_the_one_before_it_to_commit(
    postgres_database: str,
) -> None:
    engine = create_async_engine(postgres_database)
    try:
        run_id = await _a_run(engine)
        async with engine.connect() as first:
            await first.execute(
                insert(Event.__table__), {"run_id": run_id, "type": "first", "data": {}}
            )
            second = asyncio.create_task(_insert_event(engine, run_id))
            await asyncio.sleep(0.3)
            assert not second.done()
            await first.commit()
        later_id = await asyncio.wait_for(second, 5)
        async with engine.connect() as connection:
            first_id = await connection.scalar(text("SELECT id FROM events WHERE type = 'first'"))
        assert first_id < later_id
    finally:
        await engine.dispose()


async def test_a_commit_with_events_notifies_the_highest_id(postgres_database: str) -> None:
    engine = create_async_engine(postgres_database)
    listener = await asyncpg.connect(postgres_dsn(postgres_database))
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("crew_events", lambda *args: heard.put_nowait(args[3]))
    try:
        run_id = await _a_run(engine)
        event_id = await _insert_event(engine, run_id)
        assert await asyncio.wait_for(heard.get(), 5) == str(event_id)
    finally:
        await listener.close()
        await engine.dispose()
