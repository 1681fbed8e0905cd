"""X-Timezone: every timestamp of a response in the asked zone, and naive query times read in it."""

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from apps.core.database import SessionFactory, unit_of_work
from apps.core.settings import Settings
from tests.api.pages import error_detail, get_json, single_page
from tests.factories import create_artifact, create_event, create_node, create_run

PARIS = {"X-Timezone": "Europe/Paris"}
WINTER = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
SUMMER = datetime(2024, 7, 1, 10, 0, tzinfo=UTC)
RUN_TIMESTAMPS = ("created_at", "updated_at", "started_at", "finished_at", "cancel_requested_at")
NODE_TIMESTAMPS = ("created_at", "updated_at", "started_at", "finished_at")


async def create_everything(sessions: SessionFactory, settings: Settings) -> dict[str, Any]:
    """A run, a node, an artifact and an event with every timestamp set, in winter and summer."""
    async with unit_of_work(sessions) as session:
        run = await create_run(
            session,
            created_at=WINTER,
            updated_at=SUMMER,
            started_at=WINTER,
            finished_at=SUMMER,
            cancel_requested_at=SUMMER,
        )
        node = await create_node(
            session,
            run,
            created_at=WINTER,
            updated_at=SUMMER,
            started_at=WINTER,
            finished_at=SUMMER,
        )
        artifact = await create_artifact(session, node, settings.artifacts_dir, created_at=SUMMER)
        winter_event = await create_event(session, run, ts=WINTER)
        summer_event = await create_event(session, run, node_id=node.id, ts=SUMMER)
    return {
        "run": run,
        "node": node,
        "artifact": artifact,
        "events": [winter_event, summer_event],
    }


async def in_paris_and_in_utc(client: httpx.AsyncClient, path: str) -> tuple[Any, Any]:
    """The body of GET `path` with the Paris zone, and without a zone."""
    return await get_json(client, path, headers=PARIS), await get_json(client, path)


def assert_same_instants(in_zone: dict[str, Any], in_utc: dict[str, Any], fields: Any) -> None:
    """The two bodies are equal but for `fields`, which are the same instants."""
    assert {k: v for k, v in in_zone.items() if k not in fields} == {
        k: v for k, v in in_utc.items() if k not in fields
    }
    for field in fields:
        assert datetime.fromisoformat(in_zone[field]) == datetime.fromisoformat(in_utc[field])


def assert_utc(value: str) -> None:
    assert value.endswith(("Z", "+00:00")), value
    assert datetime.fromisoformat(value).utcoffset().total_seconds() == 0


async def test_paris_converts_every_run_timestamp(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    made = await create_everything(sessions, settings)
    path = f"/runs/{made['run'].id}"

    in_paris, in_utc = await in_paris_and_in_utc(client, path)
    listed = await single_page(client, "/runs", headers=PARIS)

    assert {field: in_paris[field] for field in RUN_TIMESTAMPS} == {
        "created_at": "2024-01-15T11:00:00+01:00",
        "updated_at": "2024-07-01T12:00:00+02:00",
        "started_at": "2024-01-15T11:00:00+01:00",
        "finished_at": "2024-07-01T12:00:00+02:00",
        "cancel_requested_at": "2024-07-01T12:00:00+02:00",
    }
    assert_same_instants(in_paris, in_utc, RUN_TIMESTAMPS)
    # A listed run is the run without its spec.
    assert listed == [{key: value for key, value in in_paris.items() if key != "task_spec"}]


async def test_paris_converts_every_node_timestamp(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    made = await create_everything(sessions, settings)
    path = f"/nodes/{made['node'].id}"

    in_paris, in_utc = await in_paris_and_in_utc(client, path)
    listed = await single_page(client, f"/runs/{made['run'].id}/nodes", headers=PARIS)

    assert {field: in_paris[field] for field in NODE_TIMESTAMPS} == {
        "created_at": "2024-01-15T11:00:00+01:00",
        "updated_at": "2024-07-01T12:00:00+02:00",
        "started_at": "2024-01-15T11:00:00+01:00",
        "finished_at": "2024-07-01T12:00:00+02:00",
    }
    assert_same_instants(in_paris, in_utc, NODE_TIMESTAMPS)
    assert listed == [in_paris]


async def test_paris_converts_artifact_timestamps(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    made = await create_everything(sessions, settings)
    path = f"/artifacts/{made['artifact'].id}"

    in_paris, in_utc = await in_paris_and_in_utc(client, path)
    listed = await single_page(client, "/artifacts", headers=PARIS)
    listed_for_run = await single_page(client, f"/runs/{made['run'].id}/artifacts", headers=PARIS)

    assert in_paris["created_at"] == "2024-07-01T12:00:00+02:00"
    assert_same_instants(in_paris, in_utc, ("created_at",))
    assert listed == listed_for_run == [in_paris]


async def test_paris_converts_event_timestamps(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    made = await create_everything(sessions, settings)
    run_id = str(made["run"].id)

    in_paris = await single_page(client, "/events", headers=PARIS, run_id=run_id)
    in_utc = await single_page(client, "/events", run_id=run_id)

    assert [event["ts"] for event in in_paris] == [
        "2024-01-15T11:00:00+01:00",
        "2024-07-01T12:00:00+02:00",
    ]
    for event_in_paris, event_in_utc in zip(in_paris, in_utc, strict=True):
        assert_same_instants(event_in_paris, event_in_utc, ("ts",))


async def test_a_zone_with_a_half_hour_offset(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    made = await create_everything(sessions, settings)

    run = await get_json(client, f"/runs/{made['run'].id}", headers={"X-Timezone": "Asia/Kolkata"})

    assert run["created_at"] == "2024-01-15T15:30:00+05:30"


async def test_without_the_header_every_timestamp_is_utc(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    made = await create_everything(sessions, settings)

    run = await get_json(client, f"/runs/{made['run'].id}")
    node = await get_json(client, f"/nodes/{made['node'].id}")
    artifact = await get_json(client, f"/artifacts/{made['artifact'].id}")
    events = await single_page(client, "/events")

    timestamps = [run[field] for field in RUN_TIMESTAMPS]
    timestamps += [node[field] for field in NODE_TIMESTAMPS]
    timestamps += [artifact["created_at"]] + [event["ts"] for event in events]
    assert len(timestamps) == 12
    for value in timestamps:
        assert_utc(value)
    assert datetime.fromisoformat(run["created_at"]) == WINTER


async def test_x_timezone_utc_writes_utc(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    made = await create_everything(sessions, settings)

    run = await get_json(client, f"/runs/{made['run'].id}", headers={"X-Timezone": "UTC"})

    for field in RUN_TIMESTAMPS:
        assert_utc(run[field])


async def test_the_zone_of_one_request_does_not_leak_into_the_next(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    made = await create_everything(sessions, settings)
    path = f"/runs/{made['run'].id}"

    await get_json(client, path, headers=PARIS)
    after_paris = await get_json(client, path)

    assert_utc(after_paris["created_at"])


@pytest.mark.parametrize(
    "zone",
    [
        "Mars/Olympus_Mons",
        "Europe/Pariss",
        "europe/paris",
        "not a zone",
        "../../etc/passwd",
        "/etc/localtime",
        "Europe",
        "America",
        pytest.param("x" * 300, id="a-300-character-name"),
    ],
)
async def test_an_unknown_zone_is_400_naming_it(client: httpx.AsyncClient, zone: str) -> None:
    detail = await error_detail(client, "/runs", 400, headers={"X-Timezone": zone})

    assert zone in detail


async def test_an_unknown_zone_is_400_on_every_read_route(client: httpx.AsyncClient) -> None:
    for path in ("/runs", "/events", "/artifacts"):
        detail = await error_detail(client, path, 400, headers={"X-Timezone": "Mars/Olympus_Mons"})
        assert "Mars/Olympus_Mons" in detail


async def run_ids(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[str]:
    return [run["id"] for run in await single_page(client, "/runs", headers=headers, **params)]


async def test_a_naive_created_after_is_read_in_the_request_zone(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        nine = await create_run(session, created_at=SUMMER.replace(hour=9))
        ten = await create_run(session, created_at=SUMMER.replace(hour=10))
        eleven = await create_run(session, created_at=SUMMER.replace(hour=11))
    noon = "2024-07-01T12:00:00"

    assert await run_ids(client, PARIS, created_after=noon) == [str(eleven.id), str(ten.id)]
    assert await run_ids(client, PARIS, created_before=noon) == [str(nine.id)]
    tokyo = {"X-Timezone": "Asia/Tokyo"}
    assert await run_ids(client, tokyo, created_after="2024-07-01T19:00") == [
        str(eleven.id),
        str(ten.id),
    ]
    assert await run_ids(client, {}, created_after=noon) == []


async def test_a_naive_created_after_follows_daylight_saving_time(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        winter = await create_run(session, created_at=WINTER)
        summer = await create_run(session, created_at=SUMMER)

    assert await run_ids(
        client, PARIS, created_after="2024-01-15T11:00:00", created_before="2024-01-15T11:00:01"
    ) == [str(winter.id)]
    assert await run_ids(
        client, PARIS, created_after="2024-07-01T12:00:00", created_before="2024-07-01T12:00:01"
    ) == [str(summer.id)]


async def test_an_explicit_offset_wins_over_the_request_zone(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        await create_run(session, created_at=SUMMER.replace(hour=9))
        ten = await create_run(session, created_at=SUMMER.replace(hour=10))

    assert await run_ids(client, PARIS, created_after="2024-07-01T10:00:00Z") == [str(ten.id)]
    assert await run_ids(client, PARIS, created_after="2024-07-01T10:00:00+00:00") == [str(ten.id)]
