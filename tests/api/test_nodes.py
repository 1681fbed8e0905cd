"""GET /runs/{run_id}/nodes and GET /nodes/{node_id}: plan order, deps, agent, pages."""

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.models import Node, Run
from apps.orchestrator.states import NodeStatus
from tests.factories import add_dependency, create_node, create_run, minutes_ago

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


async def create_plan(sessions: SessionFactory) -> tuple[Run, dict[str, Node]]:
    """plan -> (write_a, write_b) -> review -> assemble, inserted out of plan order."""
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        nodes = {}
        for key, position in [
            ("review", 3),
            ("write_b", 2),
            ("plan", 0),
            ("assemble", 4),
            ("write_a", 1),
        ]:
            nodes[key] = await create_node(session, run, key=key, position=position)
        await add_dependency(session, nodes["write_a"], nodes["plan"])
        await add_dependency(session, nodes["write_b"], nodes["plan"])
        await add_dependency(session, nodes["review"], nodes["write_b"])
        await add_dependency(session, nodes["review"], nodes["write_a"])
        await add_dependency(session, nodes["assemble"], nodes["review"])
    return run, nodes


async def walk_nodes(client: httpx.AsyncClient, run: Run, limit: int) -> list[dict[str, Any]]:
    """Every node of `run`, following next_cursor from the first page to the last."""
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/runs/{run.id}/nodes", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


async def test_nodes_are_listed_in_plan_order_by_position(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _ = await create_plan(sessions)

    response = await client.get(f"/runs/{run.id}/nodes")

    assert response.status_code == 200
    assert [node["key"] for node in response.json()["items"]] == [
        "plan",
        "write_a",
        "write_b",
        "review",
        "assemble",
    ]
    assert [node["position"] for node in response.json()["items"]] == [0, 1, 2, 3, 4]
    assert response.json()["next_cursor"] is None


async def test_deps_list_the_keys_of_upstream_nodes_in_plan_order(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _ = await create_plan(sessions)

    response = await client.get(f"/runs/{run.id}/nodes")

    assert response.status_code == 200
    assert {node["key"]: node["deps"] for node in response.json()["items"]} == {
        "plan": [],
        "write_a": ["plan"],
        "write_b": ["plan"],
        "review": ["write_a", "write_b"],
        "assemble": ["review"],
    }


async def test_a_run_lists_only_its_own_nodes(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        mine = await create_node(session, run, key="write")
        other = await create_run(session)
        await create_node(session, other, key="write")

    response = await client.get(f"/runs/{run.id}/nodes")

    assert response.status_code == 200
    assert [node["id"] for node in response.json()["items"]] == [str(mine.id)]


async def test_a_run_without_nodes_has_an_empty_list(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)

    response = await client.get(f"/runs/{run.id}/nodes")

    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


async def test_walking_every_page_yields_every_node_once_with_its_deps(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _ = await create_plan(sessions)
    everything = (await client.get(f"/runs/{run.id}/nodes")).json()["items"]

    for limit in (1, 2, 3, 5):
        assert await walk_nodes(client, run, limit) == everything


async def test_a_page_of_nodes_has_a_cursor_only_when_more_follow(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _ = await create_plan(sessions)

    first = await client.get(f"/runs/{run.id}/nodes", params={"limit": 3})
    second = await client.get(
        f"/runs/{run.id}/nodes", params={"limit": 3, "cursor": first.json()["next_cursor"]}
    )

    assert [node["key"] for node in first.json()["items"]] == ["plan", "write_a", "write_b"]
    assert first.json()["next_cursor"] is not None
    assert [node["key"] for node in second.json()["items"]] == ["review", "assemble"]
    assert second.json()["next_cursor"] is None


async def test_a_node_cursor_of_another_run_is_400(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _ = await create_plan(sessions)
    other, _ = await create_plan(sessions)
    cursor = (await client.get(f"/runs/{run.id}/nodes", params={"limit": 1})).json()["next_cursor"]

    response = await client.get(f"/runs/{other.id}/nodes", params={"cursor": cursor})

    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


@pytest.mark.parametrize("position", [-(2**31) - 1, 2**31, 2**63, "1", 1.5, True])
async def test_a_forged_node_cursor_is_400(
    client: httpx.AsyncClient, sessions: SessionFactory, position: Any
) -> None:
    run, _ = await create_plan(sessions)
    raw = json.dumps([f"nodes:{run.id.hex}", position]).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")

    response = await client.get(f"/runs/{run.id}/nodes", params={"cursor": cursor})

    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


@pytest.mark.parametrize("limit", ["0", "201", "two"])
async def test_a_bad_node_limit_is_422(
    client: httpx.AsyncClient, sessions: SessionFactory, limit: str
) -> None:
    run, _ = await create_plan(sessions)

    response = await client.get(f"/runs/{run.id}/nodes", params={"limit": limit})

    assert response.status_code == 422
    assert "limit" in response.json()["detail"]


async def test_a_node_has_every_field_with_its_agent(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        outline = await create_node(session, run, key="outline", position=0)
        node = await create_node(
            session,
            run,
            key="section_1",
            position=1,
            role="writer",
            status=NodeStatus.FAILED,
            attempt=2,
            max_attempts=4,
            timeout_seconds=90.5,
            provider="openai",
            model="gpt-4o-mini",
            gate={"required": True, "timeout_minutes": 30, "on_timeout": "reject"},
            error="provider timed out",
            created_at=minutes_ago(10, NOW),
            updated_at=minutes_ago(1, NOW),
            started_at=minutes_ago(5, NOW),
            finished_at=minutes_ago(2, NOW),
        )
        await add_dependency(session, node, outline)

    response = await client.get(f"/nodes/{node.id}")

    assert response.status_code == 200
    body = response.json()
    timestamps = {
        field: datetime.fromisoformat(body.pop(field))
        for field in ("created_at", "updated_at", "started_at", "finished_at")
    }
    assert body == {
        "id": str(node.id),
        "run_id": str(run.id),
        "key": "section_1",
        "position": 1,
        "role": "writer",
        "status": "failed",
        "deps": ["outline"],
        "attempt": 2,
        "max_attempts": 4,
        "timeout_seconds": 90.5,
        "agent": {"provider": "openai", "model": "gpt-4o-mini"},
        "gate": {"required": True, "timeout_minutes": 30, "on_timeout": "reject"},
        "error": "provider timed out",
    }
    assert timestamps == {
        "created_at": minutes_ago(10, NOW),
        "updated_at": minutes_ago(1, NOW),
        "started_at": minutes_ago(5, NOW),
        "finished_at": minutes_ago(2, NOW),
    }


async def test_a_listed_node_is_the_same_as_the_node_itself(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, nodes = await create_plan(sessions)

    listed = (await client.get(f"/runs/{run.id}/nodes")).json()["items"]
    review = await client.get(f"/nodes/{nodes['review'].id}")

    assert review.status_code == 200
    assert review.json() == next(node for node in listed if node["key"] == "review")
    assert review.json()["agent"] == {"provider": "demo", "model": "demo-1"}
    assert review.json()["started_at"] is None
    assert review.json()["gate"] is None


async def test_nodes_of_an_unknown_run_are_404_naming_it(client: httpx.AsyncClient) -> None:
    run_id = uuid.uuid4()

    response = await client.get(f"/runs/{run_id}/nodes")

    assert response.status_code == 404
    assert str(run_id) in response.json()["detail"]


async def test_unknown_node_is_404_naming_it(client: httpx.AsyncClient) -> None:
    node_id = uuid.uuid4()

    response = await client.get(f"/nodes/{node_id}")

    assert response.status_code == 404
    assert str(node_id) in response.json()["detail"]


@pytest.mark.parametrize("path", ["/nodes/write", "/runs/42/nodes"])
async def test_malformed_ids_in_node_routes_are_422(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)
