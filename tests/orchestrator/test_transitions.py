import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.errors import InvalidTransition
from apps.orchestrator.model.models import Event, Node, Run
from apps.orchestrator.model.states import NodeStatus, RunStatus
from apps.orchestrator.model.transitions import move_node, move_run, record_event
from tests.factories import create_node, create_run


async def _events(sessions: SessionFactory) -> list[tuple[str, str | None, dict]]:
    async with sessions() as session:
        rows = await session.execute(
            select(Event.type, Event.node_id, Event.data).order_by(Event.id)
        )
        return [(kind, node_id, data) for kind, node_id, data in rows]


async def test_a_run_starts_and_finishes_with_its_events(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
    async with unit_of_work(sessions) as session:
        await session.run_sync(
            move_run, run.id, RunStatus.QUEUED, RunStatus.RUNNING, cause="worker"
        )
    async with unit_of_work(sessions) as session:
        await session.run_sync(
            move_run, run.id, RunStatus.RUNNING, RunStatus.FAILED, cause="node", error="boom"
        )

    async with sessions() as session:
        stored = await session.get(Run, run.id)
    assert stored is not None
    assert (stored.status, stored.error) == (RunStatus.FAILED, "boom")
    assert stored.started_at is not None
    assert stored.finished_at is not None
    assert [(kind, data["from"]) for kind, _, data in await _events(sessions)] == [
        ("run.started", "queued"),
        ("run.failed", "running"),
    ]


async def test_a_late_worker_cannot_overwrite_a_cancel(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        node = await create_node(session, await create_run(session), status=NodeStatus.RUNNING)
    async with unit_of_work(sessions) as session:
        await session.run_sync(
            move_node, node, NodeStatus.RUNNING, NodeStatus.CANCELLED, cause="operator"
        )

    with pytest.raises(InvalidTransition, match="node is cancelled now, not running"):
        async with unit_of_work(sessions) as session:
            await session.run_sync(
                move_node, node, NodeStatus.RUNNING, NodeStatus.SUCCEEDED, cause="worker"
            )

    async with sessions() as session:
        assert await session.scalar(select(Node.status)) is NodeStatus.CANCELLED
    assert [kind for kind, _, _ in await _events(sessions)] == ["node.cancelled"]


async def test_a_failed_attempt_going_back_to_ready_is_a_retry(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        node = await create_node(session, await create_run(session), status=NodeStatus.RUNNING)
    async with unit_of_work(sessions) as session:
        await session.run_sync(
            move_node, node, NodeStatus.RUNNING, NodeStatus.READY, cause="timeout", attempt=2
        )

    async with sessions() as session:
        stored = await session.get(Node, node.id)
    assert stored is not None
    assert (stored.status, stored.attempt) == (NodeStatus.READY, 2)
    assert [(kind, node_id) for kind, node_id, _ in await _events(sessions)] == [
        ("node.retrying", node.id)
    ]


async def test_a_refused_transition_writes_nothing(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.SUCCEEDED)
    with pytest.raises(InvalidTransition, match="final"):
        async with unit_of_work(sessions) as session:
            await session.run_sync(
                move_run, run.id, RunStatus.SUCCEEDED, RunStatus.RUNNING, cause="x"
            )
    assert await _events(sessions) == []


async def test_events_are_written_when_their_unit_of_work_commits(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
    async with unit_of_work(sessions) as session:
        await session.run_sync(
            move_run, run.id, RunStatus.QUEUED, RunStatus.RUNNING, cause="worker"
        )
        assert await session.scalar(select(func.count()).select_from(Event)) == 0

    assert [kind for kind, _, _ in await _events(sessions)] == ["run.started"]


async def test_a_unit_of_work_that_fails_writes_no_event(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)

    with pytest.raises(RuntimeError, match="the work failed"):
        async with unit_of_work(sessions) as session:
            await session.run_sync(
                move_run, run.id, RunStatus.QUEUED, RunStatus.RUNNING, cause="worker"
            )
            raise RuntimeError("the work failed")

    assert await _events(sessions) == []


async def test_transactions_write_their_work_and_its_events_in_the_order_recorded(
    sessions: SessionFactory, transactions: Transactions
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)

    def start_and_note(session: Session) -> None:
        move_run(session, run.id, RunStatus.QUEUED, RunStatus.RUNNING, cause="worker")
        record_event(session, run.id, "run.cancel_requested")
        record_event(session, run.id, "run.cancelled")

    await transactions.run(start_and_note)

    kinds = [kind for kind, _, _ in await _events(sessions)]
    assert kinds == ["run.started", "run.cancel_requested", "run.cancelled"]


async def test_an_event_outside_a_unit_of_work_is_refused(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)

    async with sessions() as session:
        with pytest.raises(RuntimeError, match="outside a unit of work"):
            await session.run_sync(record_event, run.id, "run.cancel_requested")


async def test_an_event_of_a_type_clients_cannot_filter_by_is_refused(
    sessions: SessionFactory,
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        with pytest.raises(ValueError, match=r"'node\.finished' is not in"):
            await session.run_sync(record_event, run.id, "node.finished")
    assert [kind for kind, _, _ in await _events(sessions)] == []
