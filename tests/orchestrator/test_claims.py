"""Claims: a worker takes what its free slots and the run's concurrency allow, never more."""

import httpx
from sqlalchemy import func, select, text

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.engine import passes
from apps.orchestrator.model.models import Node
from apps.orchestrator.model.states import NodeStatus

ROOTS = 200


async def test_a_claim_takes_its_slots_and_no_more_whatever_the_planner_knows(
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    transactions: Transactions,
    settings: Settings,
) -> None:
    nodes = [{"key": f"n{i}", "role": "writer", "prompt": "Write."} for i in range(ROOTS)]
    body = {"title": "Many roots", "task_spec": {"type": "dag", "nodes": nodes}}
    assert (await client.post("/tasks", json=body)).status_code == 202
    # Statistics taken while every node is pending: a planner that then expects few ready
    # nodes once ran the claim's choice again for each of them and claimed them all.
    async with unit_of_work(sessions) as session:
        await session.execute(text("ANALYZE"))
    wide = settings.model_copy(update={"run_concurrency": ROOTS})

    passed = await transactions.run(passes.run_pass, [], worker="w", slots=3, settings=wide)

    assert len(passed.claimed) == 3
    async with sessions() as session:
        running = await session.scalar(
            select(func.count()).where(Node.status == NodeStatus.RUNNING)
        )
    assert running == 3
