"""GET /runs/{run_id}/nodes and GET /nodes/{node_id}: plan order, deps, agent, pages."""

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.model.models import Node, Run
from apps.orchestrator.model.states import NodeStatus
from tests.api.pages import error_detail, every_page, forge_cursor, get_json, single_page
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


async def test_nodes_are_listed_in_plan_order_by_position(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _ = await create_plan(sessions)

    items = await single_page(client, f"/runs/{run.id}/nodes")

    assert [node["key"] for node in items] == ["plan", "write_a", "write_b", "review", "assemble"]
    assert [node["position"] for node in items] == [0, 1, 2, 3, 4]


async def test_deps_list_the_keys_of_upstream_nodes_in_plan_order(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _ = await create_plan(sessions)

    items = await single_page(client, f"/runs/{run.id}/nodes")

    assert {node["key"]: node["deps"] for node in items} == {
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

    items = await single_page(client, f"/runs/{run.id}/nodes")

    assert [node["id"] for node in items] == [str(mine.id)]


async def test_a_run_without_nodes_has_an_empty_list(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)

    assert await get_json(client, f"/runs/{run.id}/nodes") == {"items": [], "next_cursor": None}


async def test_walking_every_page_yields_every_node_once_with_its_deps(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _ = await create_plan(sessions)
    everything = await single_page(client, f"/runs/{run.id}/nodes")

    for limit in (1, 2, 3, 5):
        assert await every_page(client, f"/runs/{run.id}/nodes", limit) == everything


async def test_a_page_of_nodes_has_a_cursor_only_when_more_follow(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _ = await create_plan(sessions)

    first = await get_json(client, f"/runs/{run.id}/nodes", limit=3)
    second = await get_json(client, f"/runs/{run.id}/nodes", limit=3, cursor=first["next_cursor"])

    assert [node["key"] for node in first["items"]] == ["plan", "write_a", "write_b"]
    assert first["next_cursor"] is not None
    assert [node["key"] for node in second["items"]] == ["review", "assemble"]
    assert second["next_cursor"] is None


async def test_a_node_cursor_of_another_run_is_400(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _ = await create_plan(sessions)
    other, _ = await create_plan(sessions)
    cursor = (await get_json(client, f"/runs/{run.id}/nodes", limit=1))["next_cursor"]

    detail = await error_detail(client, f"/runs/{other.id}/nodes", 400, cursor=cursor)

    assert "cursor" in detail


@pytest.mark.parametrize("position", [-(2**31) - 1, 2**31, 2**63, "1", 1.5, True])
async def test_a_forged_node_cursor_is_400(
    client: httpx.AsyncClient, sessions: SessionFactory, position: Any
) -> None:
    run, _ = await create_plan(sessions)
    cursor = forge_cursor(f"nodes:{run.id.hex}", position)

    detail = await error_detail(client, f"/runs/{run.id}/nodes", 400, cursor=cursor)

    assert "cursor" in detail


@pytest.mark.parametrize("limit", ["0", "201", "two"])
async def test_a_bad_node_limit_is_422(
    client: httpx.AsyncClient, sessions: SessionFactory, limit: str
) -> None:
    run, _ = await create_plan(sessions)

    detail = await error_detail(client, f"/runs/{run.id}/nodes", 422, limit=limit)

    assert "limit" in detail


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

    body = await get_json(client, f"/nodes/{node.id}")

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

    listed = await single_page(client, f"/runs/{run.id}/nodes")
    review = await get_json(client, f"/nodes/{nodes['review'].id}")

    assert review == next(node for node in listed if node["key"] == "review")
    assert review["agent"] == {"provider": "demo", "model": "demo-1"}
    assert review["started_at"] is None
    assert review["gate"] is None


async def test_nodes_of_an_unknown_run_are_404_naming_it(client: httpx.AsyncClient) -> None:
    run_id = uuid.uuid4()

    detail = await error_detail(client, f"/runs/{run_id}/nodes", 404)

    assert str(run_id) in detail


async def test_unknown_node_is_404_naming_it(client: httpx.AsyncClient) -> None:
    node_id = uuid.uuid4()

    detail = await error_detail(client, f"/nodes/{node_id}", 404)

    assert str(node_id) in detail


@pytest.mark.parametrize("path", ["/nodes/write", "/runs/42/nodes"])
async def test_malformed_ids_in_node_routes_are_422(client: httpx.AsyncClient, path: str) -> None:
    await error_detail(client, path, 422)
