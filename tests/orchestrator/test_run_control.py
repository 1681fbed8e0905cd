"""Operator controls through the HTTP API: gates and decisions, timeouts, cancel and resume."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.engine.submission import submit_task
from apps.orchestrator.infra.providers.base import LLMReply, LLMRequest
from apps.orchestrator.infra.providers.demo import DemoProvider
from apps.orchestrator.infra.providers.openai_compatible import OpenAICompatibleProvider
from apps.orchestrator.model.models import KeyRole
from apps.orchestrator.plans.task_specs import TaskRequest
from apps.orchestrator.worker.loop import Worker
from tests.api.test_auth import _key
from tests.chat_server import Script, chat_server
from tests.orchestrator.test_worker import (
    FailingProvider,
    _assert_events_replay_to_the_database,
    _submit,
)

GATED_DAG = {
    "type": "dag",
    "nodes": [
        {"key": "draft", "role": "writer", "prompt": "Draft it.", "gate": {}},
        {"key": "final", "role": "assembler", "prompt": "Assemble.", "deps": ["draft"]},
    ],
}


def _dag(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"type": "dag", "nodes": list(nodes)}


async def _nodes(client: httpx.AsyncClient, run_id: str) -> dict[str, dict[str, Any]]:
    items = (await client.get(f"/runs/{run_id}/nodes")).json()["items"]
    return {node["key"]: node for node in items}


async def _waiting_at_its_gate(
    client: httpx.AsyncClient, transactions: Transactions, settings: Settings
) -> str:
    """A run of GATED_DAG, worked until its draft waits for a decision; its id."""
    run_id = await _submit(client, GATED_DAG)
    await Worker(transactions, settings).drain()
    return run_id


async def _wait_for(check: Callable[[], Any], *, seconds: float = 10.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := await check():
            return found
        await asyncio.sleep(every)
    pytest.fail("the condition did not hold in time")


@asynccontextmanager
async def _working(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)


async def test_a_gated_output_waits_in_the_inbox_and_an_approval_with_a_patch_reaches_dependents(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _waiting_at_its_gate(client, transactions, settings)

    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["status"] == "waiting"
    nodes = await _nodes(client, run_id)
    assert nodes["draft"]["status"] == "waiting_approval"
    assert nodes["final"]["status"] == "pending"
    (gate,) = (await client.get("/gates", params={"status": "pending"})).json()["items"]
    assert (gate["run_id"], gate["run_title"], gate["node_key"]) == (
        run_id,
        "Quarterly report",
        "draft",
    )
    assert gate["artifact_id"] is not None
    assert gate["expires_at"] is None

    response = await client.post(
        f"/runs/{run_id}/approve", json={"notes": "tightened", "patch": "# Edited draft\n"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "approved"
    assert response.json()["decided_by"] == "admin"
    await Worker(transactions, settings).drain()

    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["status"] == "succeeded"
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    final = next(a for a in artifacts if a["name"] == "final.md")
    content = (await client.get(f"/artifacts/{final['id']}/content")).text
    assert "# Edited draft" in content
    drafts = [a for a in artifacts if a["name"] == "draft.md"]
    assert len(drafts) == 2
    assert drafts[0]["sidecar"] == drafts[1]["sidecar"]
    assert (await client.get("/gates", params={"status": "pending"})).json()["items"] == []
    await _assert_events_replay_to_the_database(client, run_id)


async def test_a_second_decision_on_a_gate_is_409_with_its_state(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _waiting_at_its_gate(client, transactions, settings)
    draft = (await _nodes(client, run_id))["draft"]["id"]
    approved = await client.post(f"/runs/{run_id}/approve", json={})
    assert approved.status_code == 200

    response = await client.post(f"/runs/{run_id}/reject", json={"node_id": draft})

    assert response.status_code == 409
    decided_at = approved.json()["decided_at"]
    assert decided_at.endswith("Z")
    assert response.json()["detail"] == (
        f"the gate of node {draft} is already approved by admin at {decided_at}"
    )


async def test_a_second_decision_without_a_node_says_how_the_gate_was_decided(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _waiting_at_its_gate(client, transactions, settings)
    draft = (await _nodes(client, run_id))["draft"]["id"]
    approved = await client.post(f"/runs/{run_id}/approve", json={})

    again = await client.post(f"/runs/{run_id}/approve", json={})

    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"the gate of node {draft} is already approved by admin at {approved.json()['decided_at']}"
    )


async def test_a_decision_on_a_node_not_in_the_run_is_404_and_changes_nothing(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _waiting_at_its_gate(client, transactions, settings)
    unknown = "00000000-0000-0000-0000-000000000001"
    other_run = await _submit(client, GATED_DAG)
    elsewhere = (await _nodes(client, other_run))["draft"]["id"]

    for node_id in (unknown, elsewhere):
        response = await client.post(f"/runs/{run_id}/approve", json={"node_id": node_id})
        assert response.status_code == 404
        assert response.json()["detail"] == f"node {node_id} not found in run {run_id}"
    gates = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    assert [gate["status"] for gate in gates] == ["pending"]


async def test_two_decisions_racing_on_one_gate_one_wins_the_other_gets_409(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _waiting_at_its_gate(client, transactions, settings)

    answers = await asyncio.gather(
        client.post(f"/runs/{run_id}/approve", json={}),
        client.post(f"/runs/{run_id}/reject", json={"action": "fail"}),
        client.post(f"/runs/{run_id}/approve", json={}),
    )

    assert sorted(answer.status_code for answer in answers) == [200, 409, 409]
    gates = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    assert len(gates) == 1
    assert gates[0]["status"] in ("approved", "rejected")


async def test_a_rejection_with_retry_runs_the_node_again_with_the_notes_as_feedback(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _waiting_at_its_gate(client, transactions, settings)

    response = await client.post(
        f"/runs/{run_id}/reject", json={"notes": "cite your sources", "action": "retry"}
    )
    assert response.json()["action"] == "retry"
    await Worker(transactions, settings).drain()

    nodes = await _nodes(client, run_id)
    assert (nodes["draft"]["status"], nodes["draft"]["attempt"]) == ("waiting_approval", 2)
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    retried = (await client.get(f"/artifacts/{artifacts[-1]['id']}")).json()
    assert "cite your sources" in retried["sidecar"]["prompts"]["user"]
    assert (await client.post(f"/runs/{run_id}/approve", json={})).status_code == 200
    await Worker(transactions, settings).drain()
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"
    await _assert_events_replay_to_the_database(client, run_id)


async def test_a_rejection_with_fail_fails_the_run_saying_who_and_why(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _waiting_at_its_gate(client, transactions, settings)

    await client.post(f"/runs/{run_id}/reject", json={"notes": "off topic", "action": "fail"})
    await Worker(transactions, settings).drain()

    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["status"] == "failed"
    assert run["error"] == "node 'draft' was rejected by admin: off topic"
    assert (await _nodes(client, run_id))["final"]["status"] == "skipped"
    await _assert_events_replay_to_the_database(client, run_id)


async def test_a_gate_before_a_node_holds_it_until_approved(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    spec = _dag(
        {"key": "plan", "role": "planner", "prompt": "Plan."},
        {
            "key": "spend",
            "role": "writer",
            "prompt": "Spend.",
            "deps": ["plan"],
            "gate": {"when": "before"},
        },
    )
    run_id = await _submit(client, spec)
    await Worker(transactions, settings).drain()

    nodes = await _nodes(client, run_id)
    assert (nodes["spend"]["status"], nodes["spend"]["attempt"]) == ("waiting_approval", 0)
    (gate,) = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    assert (gate["when"], gate["artifact_id"]) == ("before", None)

    patched = await client.post(f"/runs/{run_id}/approve", json={"patch": "no output yet"})
    assert patched.status_code == 422
    assert "before its node starts" in patched.json()["detail"]
    await client.post(f"/runs/{run_id}/approve", json={"node_id": nodes["spend"]["id"]})
    await Worker(transactions, settings).drain()
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"


async def test_with_several_gates_waiting_a_decision_must_name_the_node(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    spec = _dag(
        {"key": "a", "role": "writer", "prompt": "A.", "gate": {}},
        {"key": "b", "role": "writer", "prompt": "B.", "gate": {}},
    )
    run_id = await _submit(client, spec)
    await Worker(transactions, settings).drain()

    response = await client.post(f"/runs/{run_id}/approve", json={})

    assert response.status_code == 409
    assert "several gates wait" in response.json()["detail"]
    for key, node in (await _nodes(client, run_id)).items():
        assert f"{key} ({node['id']})" in response.json()["detail"]


async def test_an_expired_gate_is_decided_by_the_workers_timer_as_automatic(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    gate = {"timeout_minutes": 0.005, "on_timeout": "approve"}
    spec = _dag({"key": "draft", "role": "writer", "prompt": "Draft.", "gate": gate})
    run_id = await _submit(client, spec)

    async with _working(Worker(transactions, settings)):

        async def finished() -> bool:
            run = (await client.get(f"/runs/{run_id}")).json()
            return run["status"] == "succeeded"

        await _wait_for(finished)

    (decided,) = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    assert (decided["status"], decided["decided_by"], decided["automatic"]) == (
        "approved",
        "timeout",
        True,
    )
    events = (await client.get("/events", params={"run_id": run_id})).json()["items"]
    (waiting,) = [event for event in events if event["type"] == "gate.waiting"]
    assert waiting["data"]["expires_at"] is not None
    (approved,) = [event for event in events if event["type"] == "gate.approved"]
    assert approved["data"]["automatic"] is True


async def test_a_gate_that_times_out_into_rejects_retries_within_the_nodes_attempts(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    """Each rejection by the timeout runs the node again, an LLM call; once the node has used
    its attempts, the timeout fails it and the run, where it used to retry without end."""
    gate = {"timeout_minutes": 0.002, "on_timeout": "reject"}
    node = {"key": "draft", "role": "writer", "prompt": "Draft.", "max_attempts": 2, "gate": gate}
    run_id = await _submit(client, _dag(node))

    async with _working(Worker(transactions, settings)):

        async def ended() -> bool:
            return (await client.get(f"/runs/{run_id}")).json()["status"] == "failed"

        await _wait_for(ended)

    (draft,) = (await _nodes(client, run_id)).values()
    assert (draft["status"], draft["attempt"]) == ("failed", 2)
    assert draft["error"] == (
        "node 'draft' was rejected by timeout: the gate timed out, and its node has used its"
        " 2 attempt(s)"
    )
    gates = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    decided = [(gate["status"], gate["action"], gate["automatic"]) for gate in gates]
    assert decided == [("rejected", "retry", True), ("rejected", "fail", True)]
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    assert len(artifacts) == 2


async def test_a_person_may_reject_for_a_retry_past_the_nodes_attempts(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    node = {"key": "draft", "role": "writer", "prompt": "Draft.", "max_attempts": 1, "gate": {}}
    run_id = await _submit(client, _dag(node))
    worker = Worker(transactions, settings)

    for attempt in (1, 2):
        await worker.drain()
        assert (await _nodes(client, run_id))["draft"]["attempt"] == attempt
        answer = await client.post(f"/runs/{run_id}/reject", json={"notes": "again"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["action"] == "retry"
    await worker.drain()

    draft = (await _nodes(client, run_id))["draft"]
    assert (draft["status"], draft["attempt"]) == ("waiting_approval", 3)


class HangingProvider:
    """Answers after an hour, unless cancelled; records the cancellations."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = 0

    async def complete(self, request: LLMRequest) -> LLMReply:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return LLMReply(text="never", prompt_tokens=1, completion_tokens=1)


async def test_a_stopping_worker_hands_its_node_back_without_spending_an_attempt(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    """A SIGTERM (a rolling deploy) is no failure of the node: with one attempt allowed, it is
    still run again at once, by the next worker."""
    node = {"key": "draft", "role": "writer", "prompt": "Draft.", "max_attempts": 1}
    run_id = await _submit(client, _dag(node))
    provider = HangingProvider()

    async with _working(Worker(transactions, settings, {"demo": provider})):
        await asyncio.wait_for(provider.started.wait(), 10)

    assert provider.cancelled == 1
    handed_back = (await _nodes(client, run_id))["draft"]
    assert (handed_back["status"], handed_back["attempt"]) == ("ready", 1)
    await Worker(transactions, settings).drain()
    draft = (await _nodes(client, run_id))["draft"]
    assert (draft["status"], draft["attempt"]) == ("succeeded", 2)
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"


async def test_cancel_stops_the_calls_in_flight_then_the_run_is_cancelled_for_good(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    provider = HangingProvider()
    run_id = await _submit(client, {"type": "demo"})

    async with _working(Worker(transactions, settings, {"demo": provider})):
        await asyncio.wait_for(provider.started.wait(), 10)
        response = await client.post(f"/runs/{run_id}/cancel")
        assert response.status_code == 202
        assert response.json()["cancel_requested_at"] is not None
        asked = time.monotonic()

        async def cancelled() -> bool:
            return (await client.get(f"/runs/{run_id}")).json()["status"] == "cancelled"

        await _wait_for(cancelled)
        assert time.monotonic() - asked < 1.5

    assert provider.cancelled == 1
    nodes = await _nodes(client, run_id)
    assert {node["status"] for node in nodes.values()} == {"cancelled"}
    types = [
        e["type"] for e in (await client.get("/events", params={"run_id": run_id})).json()["items"]
    ]
    assert types.index("run.cancel_requested") < types.index("run.cancelled")
    again = await client.post(f"/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert again.json()["detail"].startswith("run is cancelled")
    await _assert_events_replay_to_the_database(client, run_id)


async def test_cancel_closes_the_providers_http_connection(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    script = Script()
    script.replies.append(("hang", 30))
    spec = _dag({"key": "draft", "role": "writer", "prompt": "Draft."})
    with chat_server(script) as base_url:
        provider = OpenAICompatibleProvider("openai", base_url, "sk-test", 60)
        run_id = await _submit(client, spec)
        async with _working(Worker(transactions, settings, {"demo": provider})):

            async def calling() -> bool:
                return bool(script.requests)

            await _wait_for(calling)
            await client.post(f"/runs/{run_id}/cancel")
            asked = time.monotonic()

            async def hung_up() -> bool:
                return bool(script.disconnects)

            await _wait_for(hung_up)

    assert script.disconnects[0] - asked < 1.0
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "cancelled"


async def test_cancelling_a_queued_run_cancels_it_at_once(client: httpx.AsyncClient) -> None:
    run_id = await _submit(client, {"type": "demo"})

    response = await client.post(f"/runs/{run_id}/cancel")

    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["node_counts"]["cancelled"] == 6


async def test_resume_reruns_what_failed_and_keeps_what_succeeded(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _submit(client, {"type": "demo"})
    await Worker(
        transactions, settings, {"demo": FailingProvider("Write part 2 of", retryable=False)}
    ).drain()
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "failed"
    before = await _nodes(client, run_id)

    response = await client.post(f"/runs/{run_id}/resume")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["error"]) == ("running", None)
    await Worker(transactions, settings, {"demo": DemoProvider(0)}).drain()

    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["status"] == "succeeded"
    after = await _nodes(client, run_id)
    assert after["write-1"]["attempt"] == before["write-1"]["attempt"] == 1
    assert after["write-2"]["attempt"] == 2
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    assert len(artifacts) == 6
    await _assert_events_replay_to_the_database(client, run_id)


@pytest.mark.parametrize("status", ["queued", "succeeded"])
async def test_resuming_a_run_that_did_not_fail_or_cancel_is_409(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
    status: str,
) -> None:
    run_id = await _submit(client, {"type": "demo"})
    if status == "succeeded":
        await Worker(transactions, settings).drain()

    response = await client.post(f"/runs/{run_id}/resume")

    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"run is {status}; only a failed or cancelled run can be resumed"
    )


@pytest.mark.parametrize(
    ("path", "body"),
    [("approve", {}), ("reject", {}), ("cancel", None), ("resume", None)],
)
async def test_a_viewer_may_not_control_a_run(
    client: httpx.AsyncClient, sessions: SessionFactory, path: str, body: dict[str, Any] | None
) -> None:
    run_id = await _submit(client, {"type": "demo"})
    viewer = {"X-API-Key": await _key(sessions, KeyRole.VIEWER)}

    response = await client.post(f"/runs/{run_id}/{path}", json=body, headers=viewer)

    assert response.status_code == 403
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "queued"


async def test_a_decision_on_an_unknown_run_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/runs/00000000-0000-0000-0000-000000000000/approve", json={})
    assert response.status_code == 404


async def test_an_outline_approved_with_a_merge_patch_plans_the_report_it_describes(
    sessions: SessionFactory,
    transactions: Transactions,
    settings: Settings,
    client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    policy = tmp_path / "operator.yaml"
    policy.write_text("gates:\n  planner: {required: true}\n")
    gated = settings.model_copy(update={"gate_policy_file": policy})
    async with unit_of_work(sessions) as session:
        request = TaskRequest.model_validate({"title": "Atlas", "task_spec": {"type": "report"}})
        run_id = str(await submit_task(session, request, created_by="test", settings=gated))
    await Worker(transactions, gated).drain()
    assert (await _nodes(client, run_id))["outline"]["status"] == "waiting_approval"

    sections = [{"title": "Rivers", "brief": "Where they run."}, {"title": "Hills", "brief": "-"}]
    patch = {"title": "An atlas", "sections": sections}
    approved = await client.post(f"/runs/{run_id}/approve", json={"patch": patch})
    assert approved.status_code == 200, approved.text
    await Worker(transactions, gated).drain()

    nodes = await _nodes(client, run_id)
    assert list(nodes) == ["outline", "section-1", "section-2", "review", "assemble"]
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"
    outlines = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"][:2]
    edited = await client.get(f"/artifacts/{outlines[1]['id']}/content")
    assert edited.json()["title"] == "An atlas"
    assert [section["title"] for section in edited.json()["sections"]] == ["Rivers", "Hills"]


async def test_a_merge_patch_on_a_markdown_output_is_422_and_changes_nothing(
    client: httpx.AsyncClient, transactions: Transactions, settings: Settings
) -> None:
    run_id = await _waiting_at_its_gate(client, transactions, settings)

    patched = await client.post(f"/runs/{run_id}/approve", json={"patch": {"title": "x"}})

    assert patched.status_code == 422
    assert "JSON merge patch applies to a JSON artifact" in patched.json()["detail"]
    assert (await _nodes(client, run_id))["draft"]["status"] == "waiting_approval"


async def test_more_cancels_and_resumes_at_once_than_the_pool_has_connections_all_answer(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """A control request holds one connection at a time: one held while it waits for a second
    would, with as many requests as connections, leave every one of them waiting."""
    connections = settings.db_pool_size + settings.db_max_overflow
    run_ids = [await _submit(client, {"type": "demo"}) for _ in range(connections + 5)]

    async with asyncio.timeout(20):
        cancels = await asyncio.gather(*(client.post(f"/runs/{r}/cancel") for r in run_ids))
        resumes = await asyncio.gather(*(client.post(f"/runs/{r}/resume") for r in run_ids))

    assert {response.status_code for response in cancels} == {202}
    assert {response.status_code for response in resumes} == {202}
