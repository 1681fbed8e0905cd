"""What a worker's pass claims once it has recorded its successes, in the same transaction: a
chain's next node starts in the pass that records its predecessor, with its input, and the claim
chooses as it always does: the oldest runs first, no run past its concurrency (the nodes that just
succeeded no longer count), dependents made ready together in plan order, none held at a gate.
The events are those of each step, in their order."""

import uuid
from typing import Any

import httpx

from apps.core.database import Transactions
from apps.core.settings import Settings
from apps.orchestrator.engine import passes
from apps.orchestrator.engine.executor import Ended, NodeWork, Succeeded
from apps.orchestrator.engine.statements import RunScope
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_pass_recording import _events
from tests.orchestrator.test_run_control import _nodes
from tests.orchestrator.test_worker import _submit


def _dag(*nodes: tuple[str, list[str]], gated: str | None = None) -> dict[str, Any]:
    specs = []
    for key, deps in nodes:
        spec: dict[str, Any] = {"key": key, "role": "writer", "prompt": f"Write {key}."}
        if deps:
            spec["deps"] = deps
        if key == gated:
            spec["gate"] = {"when": "before"}
        specs.append(spec)
    return {"type": "dag", "nodes": specs}


async def _pass(
    transactions: Transactions,
    worker: Worker,
    settings: Settings,
    outcomes: list[Ended],
    *,
    slots: int,
    start_queued: bool = False,
    scope: RunScope | None = None,
) -> passes.PassResult:
    return await transactions.run(
        passes.run_pass,
        outcomes,
        worker=worker.name,
        slots=slots,
        settings=settings,
        start_queued=start_queued,
        **({"scope": scope} if scope else {}),
    )


async def _run(worker: Worker, claimed: list[NodeWork]) -> list[Ended]:
    outcomes = [await worker.executor.attempt(work) for work in claimed]
    assert all(isinstance(outcome, Succeeded) for outcome in outcomes)
    return outcomes


async def test_a_chain_node_starts_in_the_pass_that_records_its_predecessor(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    run_id = await _submit(client, _dag(("a", []), ("b", ["a"]), ("c", ["b"])))
    worker = Worker(transactions, settings)
    first = await _pass(transactions, worker, settings, [], slots=4, start_queued=True)
    [a] = first.claimed
    outcomes = await _run(worker, first.claimed)
    before = len(await _events(client, run_id))

    second = await _pass(transactions, worker, settings, outcomes, slots=4)

    [b] = second.claimed
    assert (b.key, b.attempt) == ("b", 1)
    [(upstream_key, upstream_storage)] = b.upstream
    a_output = outcomes[0]
    assert isinstance(a_output, Succeeded)
    assert (upstream_key, upstream_storage) == ("a", a_output.output.storage_key)
    assert b.upstream_bytes == a_output.output.size
    nodes = await _nodes(client, run_id)
    assert [nodes[key]["status"] for key in "abc"] == ["succeeded", "running", "pending"]
    assert nodes["b"]["attempt"] == 1
    events = (await _events(client, run_id))[before:]
    assert [(event["type"], event["node_id"]) for event in events] == [
        ("node.succeeded", str(a.id)),
        ("artifact.created", str(a.id)),
        ("node.ready", str(b.id)),
        ("node.started", str(b.id)),
    ]
    assert events[0]["data"] == {"from": "running", "cause": "completed"}
    artifact = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"][0]
    assert events[1]["data"] == {
        "artifact_id": artifact["id"],
        "name": "a.md",
        "size": a_output.output.size,
    }
    assert events[2]["data"] == {"from": "pending", "cause": "dependencies"}
    assert events[3]["data"] == {
        "from": "ready",
        "cause": "claimed",
        "attempt": 1,
        "worker": worker.name,
    }
    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["usage"]["total_tokens"] == a_output.output.prompt_tokens + (
        a_output.output.completion_tokens
    )

    third = await _pass(transactions, worker, settings, await _run(worker, second.claimed), slots=4)
    assert [work.key for work in third.claimed] == ["c"]
    [(_, b_storage)] = third.claimed[0].upstream
    assert b_storage == f"{run_id}/1/b.md"


async def test_an_older_runs_ready_node_goes_before_a_newer_runs_dependent(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    older = uuid.UUID(await _submit(client, _dag(("x", []))))
    newer = uuid.UUID(await _submit(client, _dag(("a", []), ("b", ["a"]))))
    worker = Worker(transactions, settings)
    await _pass(transactions, worker, settings, [], slots=0, start_queued=True)
    started = await _pass(transactions, worker, settings, [], slots=1, scope=RunScope(only=newer))
    assert [work.key for work in started.claimed] == ["a"]

    recorded = await _pass(
        transactions, worker, settings, await _run(worker, started.claimed), slots=1
    )

    assert [(work.run_id, work.key) for work in recorded.claimed] == [(older, "x")]
    assert (await _nodes(client, str(newer)))["b"]["status"] == "ready"
    after = await _pass(transactions, worker, settings, [], slots=1)
    assert [(work.run_id, work.key) for work in after.claimed] == [(newer, "b")]


async def test_a_dependent_starts_only_where_its_run_has_room_once_its_dependency_succeeded(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    # a and c run; a succeeds. With two at a time the run has room for b (a's place); with one,
    # c still fills it.
    runs = {}
    for per_run in (2, 1):
        run_id = await _submit(client, _dag(("a", []), ("b", ["a"]), ("c", [])))
        two = settings.model_copy(update={"run_concurrency": 2})
        worker = Worker(transactions, two)
        only = RunScope(only=uuid.UUID(run_id))
        first = await _pass(transactions, worker, two, [], slots=2, start_queued=True, scope=only)
        [a] = [work for work in first.claimed if work.key == "a"]
        assert sorted(work.key for work in first.claimed) == ["a", "c"]
        limited = settings.model_copy(update={"run_concurrency": per_run})
        recorded = await _pass(
            transactions,
            worker,
            limited,
            await _run(worker, [a]),
            slots=4,
            scope=only,
        )
        runs[per_run] = ([work.key for work in recorded.claimed], await _nodes(client, run_id))

    assert runs[2][0] == ["b"]
    assert runs[2][1]["b"]["status"] == "running"
    assert runs[1][0] == []
    assert runs[1][1]["b"]["status"] == "ready"


async def test_dependents_made_ready_together_start_in_plan_order_as_far_as_the_room_goes(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    run_id = await _submit(
        client, _dag(("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["a"]), ("e", ["b", "c"]))
    )
    two = settings.model_copy(update={"run_concurrency": 2})
    worker = Worker(transactions, two)
    first = await _pass(transactions, worker, two, [], slots=8, start_queued=True)
    before = len(await _events(client, run_id))

    recorded = await _pass(transactions, worker, two, await _run(worker, first.claimed), slots=8)

    assert [work.key for work in recorded.claimed] == ["b", "c"]
    nodes = await _nodes(client, run_id)
    assert {key: nodes[key]["status"] for key in "bcde"} == {
        "b": "running",
        "c": "running",
        "d": "ready",
        "e": "pending",
    }
    keys = {node["id"]: key for key, node in nodes.items()}
    events = [(e["type"], keys[e["node_id"]]) for e in (await _events(client, run_id))[before:]]
    assert events == [
        ("node.succeeded", "a"),
        ("artifact.created", "a"),
        ("node.ready", "b"),
        ("node.ready", "c"),
        ("node.ready", "d"),
        ("node.started", "b"),
        ("node.started", "c"),
    ]


async def test_a_dependent_with_a_gate_before_it_starts_waits_for_approval(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    run_id = await _submit(client, _dag(("a", []), ("b", ["a"]), gated="b"))
    worker = Worker(transactions, settings)
    first = await _pass(transactions, worker, settings, [], slots=4, start_queued=True)

    recorded = await _pass(
        transactions, worker, settings, await _run(worker, first.claimed), slots=4
    )

    assert recorded.claimed == []
    nodes = await _nodes(client, run_id)
    assert nodes["b"]["status"] == "waiting_approval"
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "waiting"
    gates = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    assert [gate["node_id"] for gate in gates] == [nodes["b"]["id"]]
