"""The runs list and event pages are encoded from their rows (apps/api/encoding.py), not through
their response models: their JSON must be what the models write, for every field, in every
response zone."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import text

from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.model.states import NodeStatus, RunStatus
from apps.wire.schemas import Event
from apps.wire.timestamps import use_zone
from tests.factories import create_event, create_node, create_run

START = datetime(2024, 3, 31, 0, 30, 0, tzinfo=UTC)


async def seed_varied_runs(sessions: SessionFactory) -> None:
    """Runs whose rows take every shape a summary has: nulls and values, whole and fractional
    seconds and costs, nodes in several statuses and none, a title beyond ASCII and with
    printf's own `%` in it (SQLite writes the item with printf)."""
    async with unit_of_work(sessions) as session:
        for index, status in enumerate(RunStatus):
            created = START + timedelta(hours=index, microseconds=index * 37_001 % 1_000_000)
            run = await create_run(
                session,
                title=f'Étude n°{index} — ΣΊΣΥΦΟΣ "q" \\ \n\t\x01 🚀 100% %s %d',
                status=status,
                created_at=created,
                updated_at=created + timedelta(seconds=index),
                started_at=None if index % 2 else created + timedelta(milliseconds=5),
                finished_at=created + timedelta(minutes=1) if index > 2 else None,
                cancel_requested_at=created if status == RunStatus.CANCELLED else None,
                error="budget_exceeded" if status == RunStatus.FAILED else None,
                created_by="ops" if index % 3 else None,
                prompt_tokens=index * 100,
                completion_tokens=index * 7,
                total_tokens=index * 107,
                cost=(0.1 + 0.2) * index,
                task_spec={"type": "dag"} if index % 2 else {"nodes": []},
            )
            for position, node_status in enumerate(list(NodeStatus)[: index + 1]):
                await create_node(
                    session, run, key=f"n{position}", position=position, status=node_status
                )


def canonical(value: Any) -> str:
    # Sorted keys, and 3 and 3.0 stay apart: the encodings must agree on types too.
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("zone", [None, "Europe/Paris", "Asia/Kolkata", "Europe/London", "UTC"])
async def test_list_json_equals_the_models_json(
    client: httpx.AsyncClient, sessions: SessionFactory, zone: str | None
) -> None:
    await seed_varied_runs(sessions)
    headers = {"X-Timezone": zone} if zone else {}

    listed = await client.get("/runs", params={"limit": 4}, headers=headers)
    rest = await client.get(
        "/runs", params={"limit": 50, "cursor": listed.json()["next_cursor"]}, headers=headers
    )

    assert listed.headers["content-type"] == "application/json"
    items = listed.json()["items"] + rest.json()["items"]
    assert len(items) == len(RunStatus)
    for item in items:
        one = await client.get(f"/runs/{item['id']}", headers=headers)
        modelled = {key: value for key, value in one.json().items() if key != "task_spec"}
        assert canonical(item) == canonical(modelled)


async def test_list_json_has_every_node_status_and_a_float_cost(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        await create_run(session, cost=2)

    [item] = (await client.get("/runs")).json()["items"]

    assert item["node_counts"] == dict.fromkeys(NodeStatus, 0)
    assert item["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost": 2.0,
    }
    assert isinstance(item["usage"]["cost"], float)


async def test_a_timestamp_stored_another_way_is_still_listed_as_the_model_writes_it(
    client: httpx.AsyncClient, sessions: SessionFactory, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("only SQLite stores timestamps as text")
    async with unit_of_work(sessions) as session:
        run = await create_run(session, created_at=START)
        # What a tool writing SQLite directly might leave: no fraction of a second.
        await session.execute(
            text("UPDATE runs SET updated_at = '2024-03-31 01:00:00' WHERE id = :id"),
            {"id": run.id.hex},
        )

    [item] = (await client.get("/runs")).json()["items"]
    modelled = (await client.get(f"/runs/{run.id}")).json()

    assert item["updated_at"] == modelled["updated_at"] == "2024-03-31T01:00:00Z"


EVENT_DATA: list[dict[str, Any]] = [
    {},
    {"error": 'Étude "q" \\ \n\t\x01 🚀 100%', "attempt": 2, "cost": 0.1 + 0.2, "ok": True},
    {"expires_at": "2024-03-31T00:59:59.999999+00:00", "note": "due 2024-03-31T00:59:59+00:00"},
    {"nested": [{"decided_at": "2024-03-31T01:00:00+00:00"}, None, 1e-7, 2**70]},
]


@pytest.mark.parametrize("zone", [None, "Europe/Paris", "Asia/Kolkata", "UTC"])
async def test_event_pages_equal_the_models_json(
    client: httpx.AsyncClient, sessions: SessionFactory, zone: str | None
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        node = await create_node(session, run)
        written = [
            await create_event(
                session,
                run,
                node_id=node.id if index % 2 else None,
                type=f"node.t{index}",
                ts=START + timedelta(minutes=index, microseconds=index * 250_000 % 1_000_000),
                data=data,
            )
            for index, data in enumerate(EVENT_DATA)
        ]
        use_zone(ZoneInfo(zone) if zone else None)
        try:
            modelled = [
                json.loads(Event.model_validate(event).model_dump_json()) for event in written
            ]
        finally:
            use_zone(None)
    headers = {"X-Timezone": zone} if zone else {}

    first = await client.get("/events", params={"run_id": str(run.id), "limit": 3}, headers=headers)
    rest = await client.get(
        f"/runs/{run.id}/events", params={"cursor": first.json()["next_cursor"]}, headers=headers
    )

    assert first.headers["content-type"] == rest.headers["content-type"] == "application/json"
    assert rest.json()["next_cursor"] is None
    listed = first.json()["items"] + rest.json()["items"]
    assert [canonical(item) for item in listed] == [canonical(item) for item in modelled]
