"""GET /runs and GET /runs/{run_id}: newest first, filters, keyset pages, counts and usage."""

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.model.models import Run
from apps.orchestrator.model.states import NodeStatus, RunStatus
from tests.api.pages import (
    error_detail,
    events_cursor,
    every_page,
    forge_cursor,
    get_json,
    single_page,
)
from tests.factories import create_node, create_run, minutes_ago

NOW = datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)


async def runs_minutes_ago(sessions: SessionFactory, *minutes: float) -> list[Run]:
    """One run for each of `minutes`, created that many minutes before NOW, in that order."""
    async with unit_of_work(sessions) as session:
        return [await create_run(session, created_at=minutes_ago(m, NOW)) for m in minutes]


async def run_ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    return [run["id"] for run in await single_page(client, "/runs", **params)]


async def walk_runs(client: httpx.AsyncClient, limit: int, **params: Any) -> list[str]:
    return [run["id"] for run in await every_page(client, "/runs", limit, **params)]


async def test_runs_are_listed_newest_first(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    middle, newest, oldest = await runs_minutes_ago(sessions, 2, 1, 3)

    assert await run_ids(client) == [str(newest.id), str(middle.id), str(oldest.id)]


async def test_an_empty_list_has_no_items_and_no_cursor(client: httpx.AsyncClient) -> None:
    assert await get_json(client, "/runs") == {"items": [], "next_cursor": None}


async def test_status_filter_keeps_only_runs_in_that_status(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        await create_run(session, status=RunStatus.QUEUED, created_at=minutes_ago(4, NOW))
        first = await create_run(session, status=RunStatus.RUNNING, created_at=minutes_ago(3, NOW))
        await create_run(session, status=RunStatus.SUCCEEDED, created_at=minutes_ago(2, NOW))
        second = await create_run(session, status=RunStatus.RUNNING, created_at=minutes_ago(1, NOW))

    assert await run_ids(client, status="running") == [str(second.id), str(first.id)]
    assert await run_ids(client, status="cancelled") == []


async def test_unknown_status_filter_is_422(client: httpx.AsyncClient) -> None:
    detail = await error_detail(client, "/runs", 422, status="exploded")

    assert "status" in detail


async def test_q_matches_titles_case_insensitively(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        upper = await create_run(session, title="QUARTERLY REPORT", created_at=minutes_ago(3, NOW))
        mixed = await create_run(
            session, title="Annual Report 2024", created_at=minutes_ago(2, NOW)
        )
        await create_run(session, title="Release notes", created_at=minutes_ago(1, NOW))

    assert await run_ids(client, q="report") == [str(mixed.id), str(upper.id)]
    assert await run_ids(client, q="rEpOrT") == [str(mixed.id), str(upper.id)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("%", ["100% done"]),
        ("100%", ["100% done"]),
        ("_", ["snake_case plan"]),
        ("e_c", ["snake_case plan"]),
        ("\\", ["back\\slash"]),
    ],
)
async def test_q_treats_like_wildcards_literally(
    client: httpx.AsyncClient, sessions: SessionFactory, q: str, expected: list[str]
) -> None:
    titles = ["100% done", "1000 done", "snake_case plan", "snakeXcase plan", "back\\slash"]
    async with unit_of_work(sessions) as session:
        for minutes, title in enumerate(titles):
            await create_run(session, title=title, created_at=minutes_ago(minutes, NOW))

    assert [run["title"] for run in await single_page(client, "/runs", q=q)] == expected


async def test_created_after_is_inclusive_and_created_before_exclusive(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    early, boundary, late = await runs_minutes_ago(sessions, 3, 2, 1)
    at = minutes_ago(2, NOW).isoformat()

    assert await run_ids(client, created_after=at) == [str(late.id), str(boundary.id)]
    assert await run_ids(client, created_before=at) == [str(early.id)]
    window = {"created_after": at, "created_before": minutes_ago(1, NOW).isoformat()}
    assert await run_ids(client, **window) == [str(boundary.id)]


async def test_created_after_with_an_offset_is_the_same_instant(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    early, boundary, late = await runs_minutes_ago(sessions, 3, 2, 1)
    in_tokyo = minutes_ago(2, NOW).astimezone(timezone(timedelta(hours=9))).isoformat()
    in_new_york = minutes_ago(2, NOW).astimezone(timezone(timedelta(hours=-4))).isoformat()

    assert in_tokyo.endswith("+09:00")
    assert await run_ids(client, created_after=in_tokyo) == [str(late.id), str(boundary.id)]
    assert await run_ids(client, created_before=in_new_york) == [str(early.id)]


async def test_a_naive_created_after_is_read_as_utc_without_a_zone_header(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    _, boundary, late = await runs_minutes_ago(sessions, 3, 2, 1)
    naive = minutes_ago(2, NOW).replace(tzinfo=None).isoformat()

    assert await run_ids(client, created_after=naive) == [str(late.id), str(boundary.id)]


async def test_an_unparseable_created_after_is_422(client: httpx.AsyncClient) -> None:
    detail = await error_detail(client, "/runs", 422, created_after="last tuesday")

    assert "created_after" in detail


async def test_walking_every_page_yields_every_run_once_in_order(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        runs = [
            await create_run(session, created_at=NOW - timedelta(seconds=seconds))
            for seconds in (5, 0, 0, 3, 0, 5, 1.5, 0, 3)
        ]
    expected = [
        str(run.id) for run in sorted(runs, key=lambda run: (run.created_at, run.id), reverse=True)
    ]

    for limit in (1, 2, 3, 4, 200):
        assert await walk_runs(client, limit) == expected


async def test_runs_with_the_same_created_at_are_ordered_by_id_descending(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        runs = [await create_run(session, created_at=NOW) for _ in range(5)]

    expected = [str(run_id) for run_id in sorted((run.id for run in runs), reverse=True)]
    assert await run_ids(client) == expected
    assert await walk_runs(client, 2) == expected


async def test_pages_keep_the_filters_of_the_first_page(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        runs = [
            await create_run(
                session,
                status=RunStatus.SUCCEEDED if index % 2 else RunStatus.FAILED,
                created_at=minutes_ago(index, NOW),
            )
            for index in range(9)
        ]

    succeeded = [str(run.id) for run in runs if run.status == RunStatus.SUCCEEDED]
    assert await walk_runs(client, 2, status="succeeded") == succeeded


async def test_the_default_page_is_50_runs(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    await runs_minutes_ago(sessions, *range(51))

    page = await get_json(client, "/runs")

    assert len(page["items"]) == 50
    assert page["next_cursor"] is not None


@pytest.mark.parametrize("limit", ["0", "201", "-1", "ten", "1.5"])
async def test_a_limit_outside_1_to_200_or_not_an_integer_is_422(
    client: httpx.AsyncClient, limit: str
) -> None:
    detail = await error_detail(client, "/runs", 422, limit=limit)

    assert "limit" in detail


async def test_limits_of_1_and_200_are_accepted(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    older, newer = await runs_minutes_ago(sessions, 2, 1)

    one = await get_json(client, "/runs", limit=1)
    all_of_them = await get_json(client, "/runs", limit=200)

    assert [run["id"] for run in one["items"]] == [str(newer.id)]
    assert one["next_cursor"] is not None
    assert [run["id"] for run in all_of_them["items"]] == [str(newer.id), str(older.id)]
    assert all_of_them["next_cursor"] is None


RUN_HEX = "0f9c3b1e7a2d4c6b8e1f2a3b4c5d6e7f"


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("not-a-cursor", id="not-base64-json"),
        pytest.param("!!!!", id="punctuation"),
        pytest.param(base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(), id="not-utf8"),
        pytest.param(base64.urlsafe_b64encode(b'{"runs": 1}').decode(), id="an-object"),
        pytest.param(forge_cursor(), id="empty-list"),
        pytest.param(forge_cursor("runs"), id="no-key"),
        pytest.param(forge_cursor("runs", "yesterday", RUN_HEX), id="bad-timestamp"),
        pytest.param(forge_cursor("runs", "2024-06-01T12:00:00", RUN_HEX), id="naive-timestamp"),
        pytest.param(forge_cursor("runs", 1717243200, RUN_HEX), id="numeric-timestamp"),
        pytest.param(forge_cursor("runs", NOW.isoformat(), "not-a-uuid"), id="bad-uuid"),
        pytest.param(forge_cursor("runs", NOW.isoformat(), 5), id="numeric-uuid"),
        pytest.param(forge_cursor("runs", NOW.isoformat(), [RUN_HEX]), id="list-uuid"),
        pytest.param(
            forge_cursor("runs", "0001-01-01T00:00:00+01:00", RUN_HEX), id="timestamp-before-year-1"
        ),
    ],
)
async def test_garbled_cursor_is_400(client: httpx.AsyncClient, cursor: str) -> None:
    detail = await error_detail(client, "/runs", 400, cursor=cursor)

    assert "cursor" in detail


async def test_a_cursor_of_another_list_is_400(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    _, cursor = await events_cursor(client, sessions)

    detail = await error_detail(client, "/runs", 400, cursor=cursor)

    assert "cursor" in detail


async def test_a_run_has_every_field_with_its_usage_from_its_columns(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(
            session,
            title="Rapport 80p",
            status=RunStatus.FAILED,
            task_spec={"type": "report", "max_cost": 1.5},
            error="budget_exceeded",
            created_by="alice",
            prompt_tokens=1200,
            completion_tokens=345,
            total_tokens=1545,
            cost=0.0123,
            created_at=minutes_ago(10, NOW),
            updated_at=minutes_ago(1, NOW),
            started_at=minutes_ago(9, NOW),
            finished_at=minutes_ago(2, NOW),
            cancel_requested_at=None,
        )

    body = await get_json(client, f"/runs/{run.id}")

    timestamps = {field: body.pop(field) for field in ("created_at", "updated_at")}
    timestamps |= {field: body.pop(field) for field in ("started_at", "finished_at")}
    assert body == {
        "id": str(run.id),
        "title": "Rapport 80p",
        "status": "failed",
        "task_type": "report",
        "task_spec": {"type": "report", "max_cost": 1.5},
        "error": "budget_exceeded",
        "created_by": "alice",
        "cancel_requested_at": None,
        "node_counts": {status.value: 0 for status in NodeStatus},
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 345,
            "total_tokens": 1545,
            "cost": 0.0123,
        },
    }
    assert {field: datetime.fromisoformat(value) for field, value in timestamps.items()} == {
        "created_at": minutes_ago(10, NOW),
        "updated_at": minutes_ago(1, NOW),
        "started_at": minutes_ago(9, NOW),
        "finished_at": minutes_ago(2, NOW),
    }


async def test_node_counts_list_every_status_with_zeros(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    statuses = [
        NodeStatus.PENDING,
        NodeStatus.PENDING,
        NodeStatus.RUNNING,
        NodeStatus.SUCCEEDED,
        NodeStatus.SUCCEEDED,
        NodeStatus.SUCCEEDED,
        NodeStatus.WAITING_APPROVAL,
    ]
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        for position, status in enumerate(statuses):
            await create_node(session, run, key=f"n{position}", position=position, status=status)
        other = await create_run(session)
        await create_node(session, other, key="elsewhere", status=NodeStatus.FAILED)

    body = await get_json(client, f"/runs/{run.id}")

    assert body["node_counts"] == {
        "pending": 2,
        "ready": 0,
        "running": 1,
        "waiting_approval": 1,
        "succeeded": 3,
        "failed": 0,
        "cancelled": 0,
        "skipped": 0,
    }


async def test_listed_runs_carry_their_own_node_counts_and_usage(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        busy = await create_run(
            session, created_at=minutes_ago(2, NOW), prompt_tokens=10, total_tokens=10, cost=0.5
        )
        await create_node(session, busy, key="a", position=0, status=NodeStatus.SKIPPED)
        await create_node(session, busy, key="b", position=1, status=NodeStatus.CANCELLED)
        idle = await create_run(session, created_at=minutes_ago(1, NOW))

    items = {run["id"]: run for run in await single_page(client, "/runs")}

    zeros = {status.value: 0 for status in NodeStatus}
    assert items[str(busy.id)]["node_counts"] == zeros | {"skipped": 1, "cancelled": 1}
    assert items[str(busy.id)]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 0,
        "total_tokens": 10,
        "cost": 0.5,
    }
    assert items[str(idle.id)]["node_counts"] == zeros
    assert items[str(idle.id)]["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost": 0.0,
    }


async def test_q_is_case_insensitive_beyond_ascii(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, title="ÉTÉ : Rapport des Écoles")

    assert await run_ids(client, q="été") == [str(run.id)]
    assert await run_ids(client, q="écoles") == [str(run.id)]


async def test_a_nul_character_in_q_is_422(client: httpx.AsyncClient) -> None:
    detail = await error_detail(client, "/runs", 422, q="report\x00")

    assert detail.startswith("query q: ")


@pytest.mark.parametrize(
    "created_after", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"]
)
async def test_a_created_after_outside_the_utc_calendar_is_422(
    client: httpx.AsyncClient, created_after: str
) -> None:
    detail = await error_detail(client, "/runs", 422, created_after=created_after)

    assert "created_after" in detail


async def test_unknown_run_is_404_naming_it(client: httpx.AsyncClient) -> None:
    run_id = uuid.uuid4()

    detail = await error_detail(client, f"/runs/{run_id}", 404)

    assert str(run_id) in detail


async def test_malformed_run_id_is_422_with_a_detail_string(client: httpx.AsyncClient) -> None:
    detail = await error_detail(client, "/runs/not-a-uuid", 422)

    assert "run_id" in detail


async def test_a_run_in_a_list_is_a_summary_and_its_spec_is_on_the_run(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    """10 runs of 500 nodes with 20 KB prompts made 102 MB pages; a page is now a summary."""
    nodes = [{"key": f"n{i}", "role": "writer", "prompt": "x" * 20_000} for i in range(500)]
    spec = {"type": "dag", "nodes": nodes}
    async with unit_of_work(sessions) as session:
        runs = [await create_run(session, task_spec=spec) for _ in range(10)]

    page = await client.get("/runs", params={"limit": 200})
    one = await client.get(f"/runs/{runs[0].id}")

    assert len(page.content) < 20_000
    items = page.json()["items"]
    assert {item["task_type"] for item in items} == {"dag"}
    assert all("task_spec" not in item for item in items)
    assert one.json()["task_spec"] == spec
    assert {key: one.json()[key] for key in items[-1]} == items[-1]


async def test_the_openapi_document_says_lists_hold_summaries(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    runs = schema["paths"]["/runs"]["get"]
    listed = schema["components"]["schemas"]["RunSummary"]

    page = runs["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert page.endswith("Page_RunSummary_")
    assert "task_spec" not in listed["properties"]
    assert "GET /runs/{run_id}" in runs["description"]
    assert "task_spec" in schema["components"]["schemas"]["Run"]["properties"]
    artifacts = schema["paths"]["/runs/{run_id}/artifacts"]["get"]
    assert "without `prompts`" in artifacts["description"]


# PostgreSQL refuses to store such JSON at all.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_stored_spec_sqlite_cannot_read_does_not_break_the_list(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        broken = await create_run(session, title="Stored by an older version")
        await create_run(session, title="Fine")
        # What the API stored before it refused non-finite numbers, with no type: migration
        # 0006 reads none from a spec SQLite cannot read.
        await session.execute(
            text("UPDATE runs SET task_spec = :spec, task_type = NULL WHERE id = :id"),
            {"spec": '{"type": "demo", "budget": {"max_cost": NaN}}', "id": broken.id.hex},
        )

    listed = await client.get("/runs")
    one = await client.get(f"/runs/{broken.id}")

    assert listed.status_code == one.status_code == 200
    assert {run["title"]: run["task_type"] for run in listed.json()["items"]} == {
        "Stored by an older version": None,
        "Fine": "demo",
    }
