"""A run whose cancel was asked for ends `cancelled`, whatever its workers report afterwards: an
output arriving after the request is recorded (its artifact and what it cost), never gated."""

import asyncio
import contextlib
import random
from typing import Any

import httpx
import pytest

from apps.core.database import Transactions
from apps.core.settings import Settings
from apps.orchestrator.infra.providers.base import LLMReply, LLMRequest, ProviderError
from apps.orchestrator.infra.providers.demo import DemoProvider
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_run_control import _nodes, _wait_for, _working
from tests.orchestrator.test_worker import _assert_events_replay_to_the_database, _submit

GATED = {
    "type": "dag",
    "nodes": [
        {"key": "draft", "role": "writer", "prompt": "Draft it.", "gate": {}},
        {"key": "final", "role": "assembler", "prompt": "Assemble.", "deps": ["draft"]},
    ],
}
PLAIN = {
    "type": "dag",
    "nodes": [
        {"key": "draft", "role": "writer", "prompt": "Draft it."},
        {"key": "final", "role": "assembler", "prompt": "Assemble.", "deps": ["draft"]},
    ],
}


class ReplyOnRelease:
    """Answers (or fails) when the test releases it. The answer was already on its way when the
    worker learnt of the cancel: a cancellation of the call comes too late to stop it."""

    def __init__(self, failure: ProviderError | None = None) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.failure = failure

    async def complete(self, request: LLMRequest) -> LLMReply:
        self.started.set()
        # A cancel of the call comes too late: the answer is on its way.
        with contextlib.suppress(asyncio.CancelledError):
            await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return LLMReply(text="# Late draft\n", prompt_tokens=11, completion_tokens=7)


async def _ended(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    async def terminal() -> dict[str, Any] | None:
        run = (await client.get(f"/runs/{run_id}")).json()
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None

    return await _wait_for(terminal, seconds=10)


async def _assert_cancelled_for_good(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    run = await _ended(client, run_id)
    assert run["status"] == "cancelled", run
    gates = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    assert [gate["status"] for gate in gates if gate["status"] == "pending"] == []
    events = (await client.get("/events", params={"run_id": run_id})).json()["items"]
    types = [event["type"] for event in events]
    asked = types.index("run.cancel_requested")
    assert "gate.waiting" not in types[asked:]
    assert types[-1] == "run.cancelled"
    await _assert_events_replay_to_the_database(client, run_id)
    return run


@pytest.mark.parametrize(
    ("spec", "failure"),
    [
        pytest.param(GATED, None, id="gated-output"),
        pytest.param(PLAIN, None, id="output"),
        pytest.param(PLAIN, ProviderError("overloaded", retryable=True), id="retryable-failure"),
        pytest.param(PLAIN, ProviderError("refused", retryable=False), id="failure"),
    ],
)
async def test_what_a_worker_reports_after_a_cancel_request_cannot_keep_the_run_going(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
    spec: dict[str, Any],
    failure: ProviderError | None,
) -> None:
    provider = ReplyOnRelease(failure)
    run_id = await _submit(client, spec)

    async with _working(Worker(transactions, settings, {"demo": provider})):
        await asyncio.wait_for(provider.started.wait(), 10)
        response = await client.post(f"/runs/{run_id}/cancel")
        assert response.status_code == 202
        provider.release.set()
        run = await _assert_cancelled_for_good(client, run_id)

    nodes = await _nodes(client, run_id)
    assert {node["status"] for node in nodes.values()} == {"cancelled"}
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    if failure is None:
        # The call was made and paid for: its output and its cost are the run's.
        (artifact,) = artifacts
        assert (artifact["name"], artifact["node_id"]) == ("draft.md", nodes["draft"]["id"])
        content = await client.get(f"/artifacts/{artifact['id']}/content")
        assert content.text == "# Late draft\n"
        assert run["usage"]["total_tokens"] == 18
    else:
        assert artifacts == []


async def test_a_cancel_while_a_gated_node_runs_ends_the_run_every_time(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    """The reproduction of the report: provider latency of 100 to 250 ms, a cancel as soon as the
    gated node has started."""

    class Latency:
        async def complete(self, request: LLMRequest) -> LLMReply:
            return await DemoProvider(random.uniform(0.1, 0.25)).complete(request)

    async with _working(Worker(transactions, settings, {"demo": Latency()})):
        for _ in range(8):
            run_id = await _submit(client, GATED)

            async def started(run_id: str = run_id) -> bool:
                return (await _nodes(client, run_id))["draft"]["status"] == "running"

            await _wait_for(started, every=0.01)
            assert (await client.post(f"/runs/{run_id}/cancel")).status_code == 202
            await _assert_cancelled_for_good(client, run_id)
