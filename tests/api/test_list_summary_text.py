"""The runs list reads each run's JSON from texts the database writes with the row (migration
0007's triggers): they must follow every change of the run, whoever makes it, and be written for
the runs stored before the migration and those the previous version writes after it."""

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import delete, insert, select, text, update

from alembic import command
from apps.core.database import SessionFactory, Transactions, create_migration_engine, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.infra.providers.demo import DemoProvider
from apps.orchestrator.model.models import NODES, RUNS, Node, Run
from apps.orchestrator.model.states import NodeStatus, RunStatus
from apps.orchestrator.worker.loop import Worker
from tests.conftest import alembic_config, served, settings_for
from tests.orchestrator.driving import run_to_the_end
from tests.orchestrator.test_run_control import GATED_DAG
from tests.orchestrator.test_worker import FailingProvider, _submit


def canonical(value: Any) -> str:
    # Sorted keys, and 3 and 3.0 stay apart: the encodings must agree on types too.
    return json.dumps(value, sort_keys=True)


async def assert_listed_as_modelled(client: httpx.AsyncClient, count: int) -> list[Any]:
    """Every run of the list (one page) is what `GET /runs/{id}` says of it; the items."""
    items = (await client.get("/runs", params={"limit": 50})).json()["items"]
    assert len(items) == count
    for item in items:
        one = (await client.get(f"/runs/{item['id']}")).json()
        assert canonical(item) == canonical({k: v for k, v in one.items() if k != "task_spec"})
    return items


async def test_the_list_follows_each_run_through_its_life(
    transactions: Transactions,
    sessions: SessionFactory,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    failing = {"demo": FailingProvider("Write part 2 of", retryable=False)}
    failed = await _submit(client, {"type": "demo"})
    await assert_listed_as_modelled(client, 1)

    await Worker(transactions, settings, failing).drain()
    # Retries move a node back from running to ready, until its attempts are spent.
    retried = await _submit(client, {"type": "demo"})
    await run_to_the_end(
        Worker(
            transactions, settings, {"demo": FailingProvider("Write part 3 of", retryable=True)}
        ),
        sessions,
        client,
        retried,
    )
    await assert_listed_as_modelled(client, 2)
    async with unit_of_work(sessions) as session:
        await session.execute(delete(Run).where(Run.id == uuid.UUID(retried)))
    cancelled = await _submit(client, {"type": "demo"})
    assert (await client.post(f"/runs/{cancelled}/cancel")).status_code == 202
    gated = await _submit(client, GATED_DAG)
    await Worker(transactions, settings).drain()
    items = await assert_listed_as_modelled(client, 3)
    assert [item["status"] for item in items] == ["waiting", "cancelled", "failed"]
    assert items[2]["usage"]["total_tokens"] > 0

    assert (await client.post(f"/runs/{failed}/resume")).status_code == 202
    await assert_listed_as_modelled(client, 3)
    assert (await client.post(f"/runs/{gated}/approve", json={})).status_code == 200
    await Worker(transactions, settings, {"demo": DemoProvider(0)}).drain()
    items = await assert_listed_as_modelled(client, 3)
    assert [item["status"] for item in items] == ["succeeded", "cancelled", "succeeded"]


async def test_the_list_follows_a_run_changed_by_any_statement(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    """A change made outside the orchestrator (an operator's SQL, a tool) shows too."""
    run_id = await _submit(client, {"type": "demo"})
    async with unit_of_work(sessions) as session:
        nodes = NODES
        first, second = (
            await session.scalars(
                select(Node.id).where(Node.run_id == uuid.UUID(run_id)).order_by(Node.position)
            )
        ).all()[:2]
        await session.execute(delete(nodes).where(nodes.c.id == first))
        await session.execute(
            update(nodes).where(nodes.c.id == second).values(status=NodeStatus.SKIPPED)
        )
        await session.execute(
            update(Run)
            .where(Run.id == uuid.UUID(run_id))
            .values(
                title='Renamed "q" 100% %s',
                status=RunStatus.FAILED,
                error="by hand",
                finished_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                prompt_tokens=7,
                total_tokens=7,
                cost=0.5,
            )
        )

    [item] = await assert_listed_as_modelled(client, 1)
    assert item["node_counts"]["skipped"] == 1
    assert sum(item["node_counts"].values()) == 5
    assert (item["title"], item["error"]) == ('Renamed "q" 100% %s', "by hand")
    assert (item["status"], item["usage"]["cost"]) == ("failed", 0.5)


def _run_values(index: int) -> dict[str, Any]:
    created = datetime(2026, 3, 1, 12, 0, tzinfo=UTC) + timedelta(hours=index, microseconds=index)
    return {
        "title": f"Run {index} ünïcode",
        "status": RunStatus.SUCCEEDED if index % 2 else RunStatus.QUEUED,
        "task_spec": {"type": "demo"},
        "error": None,
        "created_by": "ops" if index % 2 else None,
        "prompt_tokens": index,
        "completion_tokens": 0,
        "total_tokens": index,
        "cost": index / 10,
        "created_at": created,
        "updated_at": created,
        "finished_at": created + timedelta(seconds=1) if index % 2 else None,
    }


def _node(run_id: uuid.UUID, position: int, status: NodeStatus) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "key": f"n{position}",
        "position": position,
        "role": "writer",
        "status": status,
        "provider": "demo",
        "model": "demo-1",
    }


def _counts(index: int) -> dict[str, int]:
    """The node counts of run `index` once its first node runs and its second is deleted."""
    statuses = list(NodeStatus)[: index % 4 + 2]
    statuses[0] = NodeStatus.RUNNING
    del statuses[1]
    return {status: statuses.count(status) for status in NodeStatus}


def test_runs_stored_before_0007_and_by_the_previous_version_are_listed_as_modelled(
    empty_database: str, tmp_path: Path
) -> None:
    """The upgrade writes the texts of the runs already stored; the triggers those of the runs
    the previous version (which names no text column) inserts and updates afterwards."""
    config = alembic_config(empty_database)
    command.upgrade(config, "0006")

    async def write(indexes: range) -> None:
        engine = create_migration_engine(empty_database)
        try:
            async with engine.begin() as connection:
                for index in indexes:
                    run_id = uuid.uuid4()
                    await connection.execute(insert(RUNS).values(id=run_id, **_run_values(index)))
                    for position, status in enumerate(list(NodeStatus)[: index % 4 + 2]):
                        await connection.execute(
                            insert(NODES).values(_node(run_id, position, status))
                        )
                await connection.execute(
                    update(RUNS)
                    .where(RUNS.c.title == "Run 0 ünïcode")
                    .values(status=RunStatus.RUNNING, started_at=datetime.now(UTC))
                )
                # The previous version moving and removing nodes of the runs stored before.
                await connection.execute(
                    update(NODES).where(NODES.c.position == 0).values(status=NodeStatus.RUNNING)
                )
                await connection.execute(delete(NODES).where(NODES.c.position == 1))
        finally:
            await engine.dispose()

    async def compare() -> None:
        async with served(settings_for(empty_database, tmp_path)) as client:
            items = await assert_listed_as_modelled(client, 6)
        assert {item["status"] for item in items} == {"running", "queued", "succeeded"}
        assert [item["node_counts"] for item in items] == [_counts(i) for i in reversed(range(6))]

    async def texts_missing() -> int:
        engine = create_migration_engine(empty_database)
        try:
            async with engine.connect() as connection:
                query = text("SELECT count(*) FROM runs WHERE summary_head IS NULL")
                return int((await connection.execute(query)).scalar_one())
        finally:
            await engine.dispose()

    asyncio.run(write(range(3)))
    command.upgrade(config, "head")
    asyncio.run(write(range(3, 6)))

    assert asyncio.run(texts_missing()) == 0
    asyncio.run(compare())


async def test_a_run_inserted_without_its_type_is_listed_with_it(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    """What 0006's trigger fills in (a run of a version before it) is in the stored text too: on
    PostgreSQL the text's trigger runs after the fill-in's, on SQLite the fill-in's update
    writes the text again."""
    async with unit_of_work(sessions) as session:
        await session.execute(insert(RUNS).values(_run_values(1) | {"task_type": None}))

    [item] = await assert_listed_as_modelled(client, 1)
    assert item["task_type"] == "demo"
