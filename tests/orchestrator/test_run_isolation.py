"""A run whose rows a worker's pass cannot process fails alone, with the reason; every other run
goes on, and the worker keeps working."""

import dataclasses
import uuid

import httpx
import pytest
from sqlalchemy import text

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.infra.providers.base import LLMReply, LLMRequest, ProviderError
from apps.orchestrator.infra.providers.demo import DemoProvider
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.driving import run_to_the_end
from tests.orchestrator.test_worker import _assert_events_replay_to_the_database, _submit

MARKER = "report usage past 64 bits"


class AbsurdUsageProvider:
    """The demo provider, except that calls whose prompt holds MARKER report more tokens than a
    64-bit counter holds, as a broken or hostile endpoint might."""

    async def complete(self, request: LLMRequest) -> LLMReply:
        reply = await DemoProvider(0).complete(request)
        if MARKER in request.prompt:
            return dataclasses.replace(reply, prompt_tokens=2**63)
        return reply


def _worker(transactions: Transactions, settings: Settings) -> Worker:
    return Worker(transactions, settings, providers={"demo": AbsurdUsageProvider()})


async def _run(client: httpx.AsyncClient, run_id: str) -> dict:
    return (await client.get(f"/runs/{run_id}")).json()


async def test_a_run_whose_outcome_cannot_be_recorded_fails_alone(
    client: httpx.AsyncClient, transactions: Transactions, settings: Settings
) -> None:
    before = await _submit(client, {"type": "demo"})
    broken = await _submit(
        client, {"type": "dag", "nodes": [{"key": "a", "role": "writer", "prompt": MARKER}]}
    )
    after = await _submit(client, {"type": "demo"})

    await _worker(transactions, settings).drain()

    assert (await _run(client, before))["status"] == "succeeded"
    assert (await _run(client, after))["status"] == "succeeded"
    failed = await _run(client, broken)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("the worker could not process this run: ")
    assert "INSERT" not in failed["error"] and "UPDATE" not in failed["error"]
    events = (await client.get("/events", params={"run_id": broken})).json()["items"]
    assert events[-1]["type"] == "run.failed"
    assert events[-1]["data"]["cause"] == "fault"
    for run_id in (before, broken, after):
        await _assert_events_replay_to_the_database(client, run_id)


async def test_a_worker_that_isolated_a_run_takes_new_work(
    client: httpx.AsyncClient, transactions: Transactions, settings: Settings
) -> None:
    worker = _worker(transactions, settings)
    broken = await _submit(
        client, {"type": "dag", "nodes": [{"key": "a", "role": "writer", "prompt": MARKER}]}
    )
    await worker.drain()
    assert (await _run(client, broken))["status"] == "failed"

    later = await _submit(client, {"type": "demo"})
    worker.wake()
    await worker.drain()

    assert (await _run(client, later))["status"] == "succeeded"


async def test_a_resumed_run_at_fault_fails_again_with_the_reason(
    client: httpx.AsyncClient, transactions: Transactions, settings: Settings
) -> None:
    worker = _worker(transactions, settings)
    broken = await _submit(
        client, {"type": "dag", "nodes": [{"key": "a", "role": "writer", "prompt": MARKER}]}
    )
    await worker.drain()

    resumed = await client.post(f"/runs/{broken}/resume")
    assert resumed.status_code == 202
    await worker.drain()

    run = await _run(client, broken)
    assert run["status"] == "failed"
    assert run["error"].startswith("the worker could not process this run")
    assert (await client.post(f"/runs/{broken}/cancel")).status_code == 409


# PostgreSQL refuses to store such JSON at all.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_stored_budget_sqlite_cannot_read_stops_only_its_run(
    client: httpx.AsyncClient,
    transactions: Transactions,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    broken = await _submit(client, {"type": "demo", "budget": {"max_cost": 1}})
    async with unit_of_work(sessions) as session:
        # What the API stored before it refused non-finite numbers.
        await session.execute(
            text("UPDATE runs SET task_spec = :spec WHERE id = :id"),
            {
                "spec": '{"type": "demo", "budget": {"max_cost": Infinity}}',
                "id": uuid.UUID(broken).hex,
            },
        )
    other = await _submit(client, {"type": "demo"})

    await Worker(transactions, settings).drain()

    assert (await _run(client, other))["status"] == "succeeded"
    failed = await _run(client, broken)
    assert failed["status"] == "failed"
    assert "malformed JSON" in failed["error"]


class NulProvider:
    """Answers what no database column takes as is: an error message, or an outline, holding a
    NUL character."""

    async def complete(self, request: LLMRequest) -> LLMReply:
        if request.json_schema:
            outline = '{"title": "T", "sections": [{"title": "A\\u0000", "brief": "b"}]}'
            return LLMReply(text=outline, prompt_tokens=1, completion_tokens=1)
        raise ProviderError("upstream said \x00no", retryable=False)


async def test_a_provider_error_with_a_nul_is_recorded_as_the_nodes_error(
    client: httpx.AsyncClient, transactions: Transactions, settings: Settings
) -> None:
    run_id = await _submit(
        client, {"type": "dag", "nodes": [{"key": "a", "role": "writer", "prompt": "Write."}]}
    )

    await Worker(transactions, settings, providers={"demo": NulProvider()}).drain()

    run = await _run(client, run_id)
    assert run["status"] == "failed"
    assert run["error"] == "node 'a' failed after 1 attempt(s): upstream said \ufffdno"


async def test_an_outline_with_a_nul_is_an_invalid_outline(
    client: httpx.AsyncClient,
    transactions: Transactions,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    run_id = await _submit(client, {"type": "report", "sections": 1})
    worker = Worker(transactions, settings, providers={"demo": NulProvider()})

    run = await run_to_the_end(worker, sessions, client, run_id)

    assert run["status"] == "failed"
    assert "the planner's outline is invalid" in run["error"]
