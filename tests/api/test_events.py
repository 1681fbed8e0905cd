"""GET /events: the log in id order, polled with `after`, filtered by run and type, paged."""

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.model.models import Event, Run
from apps.orchestrator.model.transitions import NODE_EVENTS, RUN_EVENTS
from apps.wire.event_types import EVENT_TYPES
from apps.wire.statuses import GateStatus
from tests.api.pages import error_detail, every_page, forge_cursor, get_json, single_page
from tests.factories import create_event, create_node, create_run, minutes_ago

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
TYPES = [
    "run.created",
    "node.started",
    "node.succeeded",
    "gate.waiting",
    "node.started",
    "node.failed",
    "run.cancelled",
]


async def create_log(sessions: SessionFactory) -> tuple[Run, Run, list[Event]]:
    """Events of two runs, interleaved: the first run has TYPES, the second one event per type."""
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        other = await create_run(session)
        events = []
        for type_ in TYPES:
            events.append(await create_event(session, run, type=type_))
            events.append(await create_event(session, other, type=type_))
    return run, other, events


async def event_ids(client: httpx.AsyncClient, **params: Any) -> list[int]:
    return [event["id"] for event in await single_page(client, "/events", **params)]


async def walk_events(client: httpx.AsyncClient, limit: int, **params: Any) -> list[int]:
    return [event["id"] for event in await every_page(client, "/events", limit, **params)]


async def test_events_are_listed_in_id_order(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    _, _, events = await create_log(sessions)

    ids = await event_ids(client)

    assert ids == [event.id for event in events]
    assert ids == sorted(ids)


async def test_an_event_has_every_field(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        node = await create_node(session, run)
        run_event = await create_event(session, run, ts=minutes_ago(2, NOW))
        node_event = await create_event(
            session,
            run,
            node_id=node.id,
            type="node.succeeded",
            ts=minutes_ago(1, NOW),
            data={"attempt": 1, "by": "worker-1", "usage": {"total_tokens": 42}},
        )

    items = await single_page(client, "/events")

    assert [datetime.fromisoformat(item.pop("ts")) for item in items] == [
        minutes_ago(2, NOW),
        minutes_ago(1, NOW),
    ]
    assert items == [
        {
            "id": run_event.id,
            "run_id": str(run.id),
            "node_id": None,
            "type": "run.created",
            "data": {},
        },
        {
            "id": node_event.id,
            "run_id": str(run.id),
            "node_id": str(node.id),
            "type": "node.succeeded",
            "data": {"attempt": 1, "by": "worker-1", "usage": {"total_tokens": 42}},
        },
    ]


async def test_after_returns_only_later_events(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    _, _, events = await create_log(sessions)
    ids = [event.id for event in events]

    assert await event_ids(client, after=ids[4]) == ids[5:]
    assert await event_ids(client, after=ids[-1]) == []
    assert await event_ids(client, after=0) == ids


async def test_type_filter_with_one_type(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    _, _, events = await create_log(sessions)

    assert await event_ids(client, type="node.started") == [
        event.id for event in events if event.type == "node.started"
    ]
    assert await event_ids(client, type="node.retrying") == []


async def test_type_filter_with_several_comma_separated_types(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    _, _, events = await create_log(sessions)
    expected = [event.id for event in events if event.type in {"run.created", "node.failed"}]

    assert await event_ids(client, type="run.created,node.failed") == expected
    assert await event_ids(client, type=" node.failed , run.created ,") == expected


@pytest.mark.parametrize("path", ["/events", "/runs/{run}/events"])
async def test_a_type_that_is_not_one_is_a_422_naming_it_and_the_types(
    client: httpx.AsyncClient, sessions: SessionFactory, path: str
) -> None:
    """A misspelt type used to answer an empty page, as if nothing of the kind had happened."""
    run, _, _ = await create_log(sessions)
    url = path.format(run=run.id)

    detail = await error_detail(client, url, 422, type="node.started,node.succeded,Run.created")

    assert detail.startswith("query type: not a type of event: 'node.succeded', 'Run.created';")
    assert "node.succeeded" in detail and "artifact.edited" in detail
    wildcard = await error_detail(client, url, 422, type="gate.*")
    assert wildcard.startswith("query type: not a type of event: 'gate.*'")


async def test_the_documented_types_are_those_the_service_writes(client: httpx.AsyncClient) -> None:
    """The filter's documentation lists the catalogue, which the engine's own names keep to."""
    document = (await client.get("/openapi.json")).json()
    (parameter,) = [
        p for p in document["paths"]["/events"]["get"]["parameters"] if p["name"] == "type"
    ]
    assert all(f"`{name}`" in parameter["description"] for name in EVENT_TYPES)
    written = {*RUN_EVENTS.values(), *NODE_EVENTS.values(), "run.resumed", "node.retrying"}
    written |= {f"gate.{status}" for status in GateStatus if status != GateStatus.PENDING}
    assert written <= EVENT_TYPES.keys()


async def test_run_id_filter_keeps_only_that_runs_events(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, other, events = await create_log(sessions)

    assert await event_ids(client, run_id=str(run.id)) == [
        event.id for event in events if event.run_id == run.id
    ]
    assert await event_ids(client, run_id=str(other.id), type="node.started") == [
        event.id for event in events if event.run_id == other.id and event.type == "node.started"
    ]


async def test_filters_and_after_combine(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _, events = await create_log(sessions)
    of_run = [event for event in events if event.run_id == run.id]

    assert await event_ids(
        client, run_id=str(run.id), type="node.started,node.failed", after=of_run[1].id
    ) == [of_run[4].id, of_run[5].id]


async def test_walking_every_page_yields_every_event_once(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _, events = await create_log(sessions)
    ids = [event.id for event in events]

    for limit in (1, 2, 3, 14, 200):
        assert await walk_events(client, limit) == ids
    assert await walk_events(client, 2, run_id=str(run.id), type="node.started,gate.waiting") == [
        event.id
        for event in events
        if event.run_id == run.id and event.type in {"node.started", "gate.waiting"}
    ]
    assert await walk_events(client, 3, after=ids[5]) == ids[6:]


async def test_a_page_of_events_has_a_cursor_only_when_more_follow(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    _, _, events = await create_log(sessions)

    first = await get_json(client, "/events", limit=13)
    last = await get_json(client, "/events", limit=13, cursor=first["next_cursor"])
    everything = await get_json(client, "/events", limit=14)

    assert first["next_cursor"] is not None
    assert [event["id"] for event in last["items"]] == [events[-1].id]
    assert last["next_cursor"] is None
    assert everything["next_cursor"] is None


async def test_events_of_an_unknown_run_are_404_naming_it(client: httpx.AsyncClient) -> None:
    run_id = uuid.uuid4()

    detail = await error_detail(client, "/events", 404, run_id=str(run_id))

    assert str(run_id) in detail


@pytest.mark.parametrize("after", ["-1", "one", "1.5", str(2**63), str(10**30)])
async def test_an_after_that_is_not_an_event_id_is_422(
    client: httpx.AsyncClient, after: str
) -> None:
    detail = await error_detail(client, "/events", 422, after=after)

    assert "after" in detail


@pytest.mark.parametrize("limit", ["0", "201", "all"])
async def test_a_bad_event_limit_is_422(client: httpx.AsyncClient, limit: str) -> None:
    detail = await error_detail(client, "/events", 422, limit=limit)

    assert "limit" in detail


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param(forge_cursor("events"), id="no-id"),
        pytest.param(forge_cursor("events", "7"), id="string-id"),
        pytest.param(forge_cursor("events", True), id="boolean-id"),
        pytest.param(forge_cursor("events", 2**63), id="id-beyond-bigint"),
        pytest.param(
            forge_cursor("runs", "2024-06-01T12:00:00+00:00", uuid.UUID(int=1).hex),
            id="a-runs-cursor",
        ),
    ],
)
async def test_a_cursor_that_is_not_an_events_cursor_is_400(
    client: httpx.AsyncClient, cursor: str
) -> None:
    detail = await error_detail(client, "/events", 400, cursor=cursor)

    assert "cursor" in detail


async def test_a_nul_character_in_type_is_422(client: httpx.AsyncClient) -> None:
    detail = await error_detail(client, "/events", 422, type="run.created\x00")

    assert detail.startswith("query type: ")
