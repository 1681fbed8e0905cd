import asyncio
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select

from apps.core.database import SessionFactory, unit_of_work
from apps.core.settings import AgentBinding, Settings
from apps.orchestrator.engine.submission import submit_task
from apps.orchestrator.model.models import NodeDependency
from apps.orchestrator.plans.task_specs import MAX_NODES, TaskRequest


async def _submit(sessions: SessionFactory, settings: Settings, body: dict) -> str:
    async with unit_of_work(sessions) as session:
        run_id = await submit_task(
            session, TaskRequest.model_validate(body), created_by="alice", settings=settings
        )
    return str(run_id)


async def test_a_demo_task_becomes_a_queued_run_with_its_plan(
    sessions: SessionFactory, settings: Settings, client: httpx.AsyncClient
) -> None:
    run_id = await _submit(sessions, settings, {"title": "Demo", "task_spec": {"type": "demo"}})

    run = (await client.get(f"/runs/{run_id}")).json()
    assert (run["title"], run["status"], run["created_by"]) == ("Demo", "queued", "alice")
    assert run["task_spec"] == {"type": "demo", "sections": 3}
    assert run["node_counts"]["pending"] == 6
    nodes = (await client.get(f"/runs/{run_id}/nodes")).json()["items"]
    assert [(node["key"], node["position"], node["deps"]) for node in nodes] == [
        ("plan", 0, []),
        ("write-1", 1, ["plan"]),
        ("write-2", 2, ["plan"]),
        ("write-3", 3, ["plan"]),
        ("review", 4, ["write-1", "write-2", "write-3"]),
        ("assemble", 5, ["write-1", "write-2", "write-3", "review"]),
    ]
    events = (await client.get("/events", params={"run_id": run_id})).json()["items"]
    assert [(event["type"], event["data"]["nodes"]) for event in events] == [("run.created", 6)]


async def test_each_role_gets_the_agent_settings_bind_to_it(
    sessions: SessionFactory, settings: Settings, client: httpx.AsyncClient
) -> None:
    writer = AgentBinding(provider="ollama", model="llama3.1:8b")
    bound = settings.model_copy(update={"llm_role_models": {"writer": writer}})
    run_id = await _submit(sessions, bound, {"title": "Demo", "task_spec": {"type": "demo"}})

    nodes = (await client.get(f"/runs/{run_id}/nodes")).json()["items"]
    agents = {node["role"]: (node["agent"]["provider"], node["agent"]["model"]) for node in nodes}
    assert agents["writer"] == ("ollama", "llama3.1:8b")
    assert agents["planner"] == ("demo", "demo-1")


async def test_a_dag_keeps_its_gates_and_retry_policies(
    sessions: SessionFactory, settings: Settings, client: httpx.AsyncClient
) -> None:
    body = {
        "title": "Gated",
        "task_spec": {
            "type": "dag",
            "nodes": [
                {"key": "draft", "role": "writer", "prompt": "Draft it.", "max_attempts": 5},
                {
                    "key": "publish",
                    "role": "editor",
                    "prompt": "Publish it.",
                    "deps": ["draft"],
                    "gate": {"timeout_minutes": 30, "on_timeout": "fail"},
                },
            ],
        },
    }
    run_id = await _submit(sessions, settings, body)

    draft, publish = (await client.get(f"/runs/{run_id}/nodes")).json()["items"]
    assert draft["max_attempts"] == 5
    assert draft["gate"] is None
    assert publish["gate"]["on_timeout"] == "fail"
    assert publish["gate"]["when"] == "after"


async def test_the_largest_plan_is_stored_whole(
    sessions: SessionFactory, settings: Settings
) -> None:
    nodes = [{"key": "root", "role": "planner", "prompt": "Plan."}] + [
        {"key": f"n{i}", "role": "writer", "prompt": "Write.", "deps": ["root"]}
        for i in range(MAX_NODES - 1)
    ]
    await _submit(
        sessions, settings, {"title": "Wide", "task_spec": {"type": "dag", "nodes": nodes}}
    )

    async with sessions() as session:
        edges = await session.scalar(select(func.count()).select_from(NodeDependency))
    assert edges == MAX_NODES - 1


async def _longest_stall(loop_ticks: asyncio.Event) -> float:
    """The longest time, until `loop_ticks` is set, the event loop went without running this."""
    longest, last = 0.0, time.monotonic()
    while not loop_ticks.is_set():
        await asyncio.sleep(0.01)
        now = time.monotonic()
        longest, last = max(longest, now - last), now
    return longest


async def test_the_densest_plan_is_stored_without_holding_the_event_loop(
    client: httpx.AsyncClient,
) -> None:
    """Every node depending on every one before it: 124,750 edges, which as ORM objects held
    the API process's loop (its other requests and streams) for 5 to 10 seconds."""
    nodes = [
        {"key": f"n{i}", "role": "writer", "prompt": "Write.", "deps": [f"n{j}" for j in range(i)]}
        for i in range(MAX_NODES)
    ]
    done = asyncio.Event()
    stall = asyncio.create_task(_longest_stall(done))

    response = await client.post(
        "/tasks", json={"title": "Dense", "task_spec": {"type": "dag", "nodes": nodes}}
    )
    done.set()

    assert response.status_code == 202, response.text
    assert await stall < 1.0
    listed = (await client.get(f"{response.headers['location']}/nodes?limit=200")).json()
    assert listed["items"][-1]["deps"] == [f"n{j}" for j in range(199)]


async def test_a_gate_policy_stores_the_resolved_gate_on_the_nodes_of_its_role(
    sessions: SessionFactory, settings: Settings, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    policy = tmp_path / "operator.yaml"
    policy.write_text(
        "gates:\n"
        "  defaults: {timeout_minutes: 1440}\n"
        "  writer: {required: true, auto_approve: true, timeout_minutes: 60}\n"
    )
    gated = settings.model_copy(update={"gate_policy_file": policy})
    body = {
        "title": "Gated",
        "task_spec": {
            "type": "dag",
            "nodes": [
                {"key": "plan", "role": "planner", "prompt": "Plan."},
                {"key": "draft", "role": "writer", "prompt": "Draft.", "deps": ["plan"]},
                {
                    "key": "notes",
                    "role": "writer",
                    "prompt": "Notes.",
                    "deps": ["plan"],
                    "gate": {"when": "before", "auto_approve": False},
                },
            ],
        },
    }
    run_id = await _submit(sessions, gated, body)

    plan, draft, notes = (await client.get(f"/runs/{run_id}/nodes")).json()["items"]
    assert plan["gate"] is None
    assert draft["gate"] == {
        "required": True,
        "when": "after",
        "timeout_minutes": 60.0,
        "on_timeout": "approve",
        "source": ["defaults", "role:writer"],
    }
    assert (notes["gate"]["when"], notes["gate"]["on_timeout"]) == ("before", "fail")
    assert notes["gate"]["source"] == ["defaults", "role:writer", "task_spec"]


async def test_with_no_policy_the_demo_task_has_no_gate(
    sessions: SessionFactory, settings: Settings, client: httpx.AsyncClient
) -> None:
    run_id = await _submit(sessions, settings, {"title": "Demo", "task_spec": {"type": "demo"}})
    nodes = (await client.get(f"/runs/{run_id}/nodes")).json()["items"]
    assert [node["gate"] for node in nodes] == [None] * 6
