"""Whole runs: submitted through the API, executed by a worker, read back through the API."""

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import select, update

from apps import orchestrator
from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.engine import leases, passes
from apps.orchestrator.infra.providers.base import LLMReply, LLMRequest, ProviderError
from apps.orchestrator.infra.providers.demo import DemoProvider
from apps.orchestrator.model.models import Node, utcnow
from apps.orchestrator.model.states import NodeStatus
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.driving import run_to_the_end

SIDECAR_SCHEMA = json.loads(
    (Path(orchestrator.__file__).parent / "sidecar.schema.json").read_text()
)
SIDECARS = Draft202012Validator(SIDECAR_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
NODE_STATUS_OF_EVENT = {
    "node.ready": "ready",
    "node.started": "running",
    "node.retrying": "ready",
    "node.succeeded": "succeeded",
    "node.failed": "failed",
    "node.skipped": "skipped",
    "node.cancelled": "cancelled",
    "node.waiting_approval": "waiting_approval",
    "node.requeued": "pending",
}
RUN_STATUS_OF_EVENT = {
    "run.created": "queued",
    "run.started": "running",
    "run.succeeded": "succeeded",
    "run.failed": "failed",
    "run.waiting": "waiting",
    "run.resumed": "running",
    "run.cancelled": "cancelled",
}


class FailingProvider:
    """The demo provider, except that calls whose prompt holds `marker` fail as a provider would."""

    def __init__(self, marker: str, *, retryable: bool) -> None:
        self.marker = marker
        self.retryable = retryable
        self.calls = 0

    async def complete(self, request: LLMRequest) -> LLMReply:
        if self.marker in request.prompt:
            self.calls += 1
            raise ProviderError("upstream said no", retryable=self.retryable)
        return await DemoProvider(0).complete(request)


async def _submit(client: httpx.AsyncClient, task_spec: dict[str, Any]) -> str:
    response = await client.post(
        "/tasks", json={"title": "Quarterly report", "task_spec": task_spec}
    )
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/runs/{response.json()['id']}"
    return response.json()["id"]


async def _replayed(client: httpx.AsyncClient, run_id: str) -> tuple[str, dict[str, str]]:
    events = (await client.get("/events", params={"run_id": run_id, "limit": 200})).json()["items"]
    assert len(events) < 200
    run_status, nodes = "", {}
    for event in events:
        if event["type"] in RUN_STATUS_OF_EVENT:
            run_status = RUN_STATUS_OF_EVENT[event["type"]]
        elif event["type"] in NODE_STATUS_OF_EVENT:
            nodes[event["node_id"]] = NODE_STATUS_OF_EVENT[event["type"]]
    return run_status, nodes


async def _assert_events_replay_to_the_database(client: httpx.AsyncClient, run_id: str) -> None:
    run = (await client.get(f"/runs/{run_id}")).json()
    nodes = (await client.get(f"/runs/{run_id}/nodes")).json()["items"]
    replayed_run, replayed_nodes = await _replayed(client, run_id)
    assert replayed_run == run["status"]
    assert replayed_nodes == {node["id"]: node["status"] for node in nodes}


async def test_the_seed_demo_task_runs_to_success_with_artifacts_and_sidecars(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _submit(client, {"type": "demo"})

    await Worker(transactions, settings).drain()

    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["status"] == "succeeded"
    assert run["node_counts"]["succeeded"] == 6
    assert run["usage"]["total_tokens"] > 0
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    assert len(artifacts) == 6
    on_disk = sorted(settings.artifacts_dir.glob(f"{run_id}/1/*.sidecar.json"))
    assert len(on_disk) == 6
    # A node's two files sit in its run's directory of the attempt, named for the node's key.
    assert [path.name for path in (settings.artifacts_dir / run_id).iterdir()] == ["1"]
    named = {artifact["name"] for artifact in artifacts}
    files = {path.name for path in (settings.artifacts_dir / run_id / "1").iterdir()}
    assert files == named | {f"{name}.sidecar.json" for name in named}
    for sidecar in [json.loads(path.read_text()) for path in on_disk]:
        SIDECARS.validate(sidecar)
    for artifact in artifacts:
        whole = (await client.get(f"/artifacts/{artifact['id']}")).json()
        SIDECARS.validate(whole["sidecar"])
        assert artifact["sidecar"] == {k: v for k, v in whole["sidecar"].items() if k != "prompts"}
        assert artifact["sidecar"]["run_id"] == run_id
        content = await client.get(f"/artifacts/{artifact['id']}/content")
        assert content.status_code == 200
        assert len(content.content) == artifact["size"]
    assembled = await client.get(f"/artifacts/{artifacts[-1]['id']}/content")
    assert assembled.headers["content-type"].startswith("text/markdown")
    await _assert_events_replay_to_the_database(client, run_id)


async def test_a_report_is_planned_from_the_planners_outline(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _submit(client, {"type": "report", "sections": 3})

    await Worker(transactions, settings).drain()

    nodes = (await client.get(f"/runs/{run_id}/nodes")).json()["items"]
    assert [node["key"] for node in nodes] == [
        "outline",
        "section-1",
        "section-2",
        "section-3",
        "review",
        "assemble",
    ]
    assert {node["status"] for node in nodes} == {"succeeded"}
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    assert artifacts[0]["media_type"] == "application/json"
    await _assert_events_replay_to_the_database(client, run_id)


@pytest.mark.parametrize("sections", [1, 8])
async def test_a_report_has_the_sections_asked_for_under_its_title(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
    sections: int,
) -> None:
    run_id = await _submit(client, {"type": "report", "sections": sections})

    await Worker(transactions, settings).drain()

    nodes = (await client.get(f"/runs/{run_id}/nodes")).json()["items"]
    written = [node["key"] for node in nodes if node["key"].startswith("section-")]
    assert written == [f"section-{number}" for number in range(1, sections + 1)]
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    assembled = await client.get(f"/artifacts/{artifacts[-1]['id']}/content")
    assert assembled.text.startswith("# Quarterly report\n")


async def test_a_failed_node_skips_what_had_not_started_and_fails_the_run(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _submit(client, {"type": "demo"})
    provider = FailingProvider("Write part 2 of", retryable=False)

    await Worker(transactions, settings, {"demo": provider}).drain()

    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["status"] == "failed"
    assert run["error"] == "node 'write-2' failed after 1 attempt(s): upstream said no"
    statuses = {
        n["key"]: n["status"] for n in (await client.get(f"/runs/{run_id}/nodes")).json()["items"]
    }
    assert statuses["write-2"] == "failed"
    assert statuses["review"] == statuses["assemble"] == "skipped"
    assert provider.calls == 1
    await _assert_events_replay_to_the_database(client, run_id)


async def test_a_retryable_error_is_retried_up_to_max_attempts(
    transactions: Transactions,
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    run_id = await _submit(client, {"type": "demo"})
    provider = FailingProvider("Write part 2 of", retryable=True)
    worker = Worker(transactions, settings, {"demo": provider})

    await run_to_the_end(worker, sessions, client, run_id)

    events = (await client.get("/events", params={"run_id": run_id, "limit": 200})).json()["items"]
    assert Counter(event["type"] for event in events)["node.retrying"] == 2
    assert provider.calls == 3
    assert (
        (await client.get(f"/runs/{run_id}"))
        .json()["error"]
        .endswith("after 3 attempt(s): upstream said no")
    )


async def test_an_expired_lease_is_taken_back_and_retried(
    transactions: Transactions,
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    run_id = await _submit(client, {"type": "demo"})
    passed = await transactions.run(
        passes.run_pass, [], worker="dead-worker", slots=1, settings=settings
    )
    (claimed,) = [work.id for work in passed.claimed]
    async with unit_of_work(sessions) as session:
        await session.execute(
            update(Node)
            .where(Node.id == claimed)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )

    assert await transactions.run(leases.take_back_expired_leases) == 1
    async with sessions() as session:
        node = await session.get_one(Node, claimed)
    assert (node.status, node.attempt, node.lease_owner) == (NodeStatus.READY, 1, None)

    async with unit_of_work(sessions) as session:
        await session.execute(update(Node).values(next_attempt_at=None))
    await Worker(transactions, settings).drain()
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"
    async with sessions() as session:
        attempts = await session.scalar(select(Node.attempt).where(Node.id == claimed))
    assert attempts == 2


@pytest.mark.parametrize(
    ("task_spec", "detail"),
    [
        ({"type": "poem"}, "'demo', 'report', 'dag'"),
        (
            {
                "type": "dag",
                "nodes": [{"key": "a", "role": "writer", "prompt": "p", "deps": ["a"]}],
            },
            "node 'a' depends on itself",
        ),
        (
            {
                "type": "dag",
                "nodes": [
                    {"key": "a", "role": "writer", "prompt": "p"},
                    {"key": "b", "role": "writer", "prompt": "p", "deps": ["a", "a"]},
                ],
            },
            "node 'b' lists 'a' twice in its deps",
        ),
    ],
)
async def test_a_bad_task_is_422_and_writes_nothing(
    client: httpx.AsyncClient, task_spec: dict[str, Any], detail: str
) -> None:
    response = await client.post("/tasks", json={"title": "X", "task_spec": task_spec})

    assert response.status_code == 422
    assert detail in response.json()["detail"]
    assert (await client.get("/runs")).json()["items"] == []


async def test_a_run_that_would_pass_its_token_budget_stops_as_failed(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _submit(client, {"type": "demo", "budget": {"max_tokens": 250}})

    await Worker(transactions, settings).drain()

    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["status"] == "failed"
    assert run["error"] == f"budget_exceeded: spent {run['usage']['total_tokens']} of 250 tokens"
    assert run["node_counts"]["skipped"] >= 1
    assert run["node_counts"]["succeeded"] < 6
    await _assert_events_replay_to_the_database(client, run_id)


async def test_a_run_stopped_by_its_budget_is_not_resumed_to_spend_past_it(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _submit(client, {"type": "demo", "budget": {"max_tokens": 250}})
    await Worker(transactions, settings).drain()
    stopped = (await client.get(f"/runs/{run_id}")).json()
    events = (await client.get("/events", params={"run_id": run_id, "limit": 200})).json()

    answer = await client.post(f"/runs/{run_id}/resume")

    assert answer.status_code == 409
    spent = stopped["usage"]["total_tokens"]
    assert answer.json()["detail"] == (
        f"the run's next call would pass its budget (budget_exceeded: spent {spent} of 250"
        " tokens); not resumed"
    )
    await Worker(transactions, settings).drain()
    assert (await client.get(f"/runs/{run_id}")).json() == stopped
    after = (await client.get("/events", params={"run_id": run_id, "limit": 200})).json()
    assert after == events


async def test_a_failed_run_within_its_budget_is_resumed(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _submit(client, {"type": "demo", "budget": {"max_tokens": 100_000}})
    provider = FailingProvider("Write part 2 of", retryable=False)
    await Worker(transactions, settings, {"demo": provider}).drain()
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "failed"

    assert (await client.post(f"/runs/{run_id}/resume")).status_code == 202
    await Worker(transactions, settings).drain()

    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"


class ChattyPlanner:
    """The demo provider, except that the planner answers prose instead of an outline."""

    def __init__(self) -> None:
        self.outline_calls = 0

    async def complete(self, request: LLMRequest) -> LLMReply:
        if request.json_schema is not None:
            self.outline_calls += 1
            return LLMReply(
                text="Sure! First, an introduction...", prompt_tokens=5, completion_tokens=5
            )
        return await DemoProvider(0).complete(request)


async def test_an_invalid_outline_is_retried_then_fails_the_run_saying_why(
    transactions: Transactions,
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    run_id = await _submit(client, {"type": "report"})
    planner = ChattyPlanner()
    worker = Worker(transactions, settings, {"demo": planner})

    await run_to_the_end(worker, sessions, client, run_id)

    run = (await client.get(f"/runs/{run_id}")).json()
    assert planner.outline_calls == 3
    assert run["status"] == "failed"
    assert run["error"].startswith(
        "node 'outline' failed after 3 attempt(s): the planner's outline is invalid: "
    )
    assert "Invalid JSON" in run["error"]
