from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.model.models import Event, Node, Run
from tests.factories import create_event, create_node, create_run

DOCUMENT = {"zeta": 1, "alpha": {"b": [1.5, None, "été"], "a": True}, "mid": None}


async def test_json_documents_come_back_exactly_as_written(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, task_spec=DOCUMENT)
    async with sessions() as session:
        stored = await session.scalar(select(Run.task_spec).where(Run.id == run.id))
    assert stored == DOCUMENT
    assert list(stored) == ["zeta", "alpha", "mid"]


async def test_a_missing_json_document_is_sql_null(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        node = await create_node(session, await create_run(session), gate=None)
    async with sessions() as session:
        found = await session.scalar(select(Node.id).where(Node.gate.is_(None)))
    assert found == node.id


async def test_timestamps_are_stored_in_utc_and_read_back_aware(sessions: SessionFactory) -> None:
    paris_noon = datetime(2026, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    async with unit_of_work(sessions) as session:
        run = await create_run(session, created_at=paris_noon)
    async with sessions() as session:
        stored = await session.scalar(select(Run.created_at).where(Run.id == run.id))
        earlier = await session.scalar(
            select(Run.id).where(Run.created_at < datetime(2026, 7, 1, 10, 1, tzinfo=UTC))
        )
    assert stored == paris_noon
    assert stored.tzinfo == UTC
    assert earlier == run.id


async def test_a_naive_timestamp_is_refused(sessions: SessionFactory) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        async with unit_of_work(sessions) as session:
            await create_run(session, created_at=datetime(2026, 7, 1, 12, 0))


async def test_event_ids_only_grow(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        first = [(await create_event(session, run)).id for _ in range(3)]
        await session.delete(await session.get(Event, first[-1]))
    async with unit_of_work(sessions) as session:
        later = (await create_event(session, run)).id
    assert first == sorted(first)
    assert later > first[-1]
