"""A pass records its successes, and makes ready what they unblock, in the same transaction: a
node whose dependencies all succeed in one pass starts in that pass, whichever statement (one on
PostgreSQL, several on SQLite) moved them."""

from typing import Any

import httpx

from apps.core.database import Transactions
from apps.core.settings import Settings
from apps.orchestrator.engine import passes
from apps.orchestrator.engine.executor import Succeeded
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_run_control import _nodes
from tests.orchestrator.test_worker import _submit

JOIN = {
    "type": "dag",
    "nodes": [
        {"key": "left", "role": "writer", "prompt": "Write the left half."},
        {"key": "right", "role": "writer", "prompt": "Write the right half."},
        {"key": "join", "role": "assembler", "prompt": "Join.", "deps": ["left", "right"]},
    ],
}


async def _events(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    page = await client.get("/events", params={"run_id": run_id, "limit": 200})
    items: list[dict[str, Any]] = page.json()["items"]
    return items


async def test_a_node_whose_dependencies_succeed_in_one_pass_starts_in_that_pass(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    run_id = await _submit(client, JOIN)
    worker = Worker(transactions, settings)
    first = await transactions.run(
        passes.run_pass, [], worker=worker.name, slots=2, settings=settings
    )
    assert sorted(work.key for work in first.claimed) == ["left", "right"]
    outcomes = [await worker.executor.attempt(work) for work in first.claimed]
    assert all(isinstance(outcome, Succeeded) for outcome in outcomes)
    before = len(await _events(client, run_id))

    second = await transactions.run(
        passes.run_pass, outcomes, worker=worker.name, slots=2, settings=settings
    )

    assert [work.key for work in second.claimed] == ["join"]
    assert second.refused == []
    assert [key for key, _ in second.claimed[0].upstream] == ["left", "right"]
    nodes = await _nodes(client, run_id)
    assert [nodes[key]["status"] for key in ("left", "right", "join")] == [
        "succeeded",
        "succeeded",
        "running",
    ]
    recorded = [event["type"] for event in (await _events(client, run_id))[before:]]
    assert recorded == [
        "node.succeeded",
        "node.succeeded",
        "artifact.created",
        "artifact.created",
        "node.ready",
        "node.started",
    ]
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    assert sorted(artifact["name"] for artifact in artifacts) == ["left.md", "right.md"]
    run = (await client.get(f"/runs/{run_id}")).json()
    outputs = [outcome.output for outcome in outcomes if isinstance(outcome, Succeeded)]
    assert run["usage"]["total_tokens"] == sum(
        o.prompt_tokens + o.completion_tokens for o in outputs
    )
