"""What a claim chooses: the oldest runs first, each run's first due ready nodes in plan order,
no run past its concurrency counting the nodes it already runs, only the runs of its scope."""

import uuid
from datetime import timedelta

import httpx
from sqlalchemy import update

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.engine import passes
from apps.orchestrator.engine.statements import EVERY_RUN, RunScope
from apps.orchestrator.model.models import Node, utcnow

ROOTS = 5


async def _submit(client: httpx.AsyncClient, title: str) -> uuid.UUID:
    nodes = [{"key": f"n{i}", "role": "writer", "prompt": "Write."} for i in range(ROOTS)]
    body = {"title": title, "task_spec": {"type": "dag", "nodes": nodes}}
    response = await client.post("/tasks", json=body)
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


async def _claim(
    transactions: Transactions,
    settings: Settings,
    slots: int,
    scope: RunScope = EVERY_RUN,
) -> set[tuple[uuid.UUID, str]]:
    passed = await transactions.run(
        passes.run_pass, [], worker="w", slots=slots, settings=settings, scope=scope
    )
    return {(work.run_id, work.key) for work in passed.claimed}


async def test_the_oldest_run_goes_first_and_no_run_passes_its_concurrency(
    client: httpx.AsyncClient, transactions: Transactions, settings: Settings
) -> None:
    older = await _submit(client, "Older")
    newer = await _submit(client, "Newer")
    two = settings.model_copy(update={"run_concurrency": 2})

    first = await _claim(transactions, two, slots=3)
    # The older run is full (two running), the newer one has room for one more.
    second = await _claim(transactions, two, slots=3)
    third = await _claim(transactions, two, slots=3)

    assert first == {(older, "n0"), (older, "n1"), (newer, "n0")}
    assert second == {(newer, "n1")}
    assert third == set()


async def test_a_node_waiting_out_its_backoff_is_passed_over_for_the_next_in_plan_order(
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    transactions: Transactions,
    settings: Settings,
) -> None:
    run_id = await _submit(client, "Backoff")
    await _claim(transactions, settings, slots=0)  # starts the run: its roots are ready
    async with unit_of_work(sessions) as session:
        later = utcnow() + timedelta(hours=1)
        await session.execute(
            update(Node)
            .where(Node.run_id == run_id, Node.key.in_(["n0", "n2"]))
            .values(next_attempt_at=later)
        )
    two = settings.model_copy(update={"run_concurrency": 2})

    claimed = await _claim(transactions, two, slots=8)

    assert claimed == {(run_id, "n1"), (run_id, "n3")}


async def test_a_claim_takes_only_from_the_runs_of_its_scope(
    client: httpx.AsyncClient, transactions: Transactions, settings: Settings
) -> None:
    older = await _submit(client, "Older")
    newer = await _submit(client, "Newer")
    one = settings.model_copy(update={"run_concurrency": 1})

    only_newer = await _claim(transactions, one, slots=8, scope=RunScope(only=newer))
    but_newer = await _claim(
        transactions, one, slots=8, scope=RunScope(excluded=frozenset({newer}))
    )

    assert only_newer == {(newer, "n0")}
    assert but_newer == {(older, "n0")}
