"""Event pages read by the driver itself (`reading.event_pages`): the same page on SQLite's
readers as on a connection of the read engine, with every filter, and a driver's failure raised
as SQLAlchemy's."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from apps.core.database import unit_of_work
from apps.core.errors import BadRequest, NotFound
from apps.core.read_connections import DriverReads
from apps.orchestrator.model.models import Event
from apps.orchestrator.reading import event_pages
from apps.orchestrator.reading.driver_calls import fetch_all
from tests.factories import create_event, create_node, create_run

START = datetime(2024, 3, 31, 0, 30, tzinfo=UTC)


async def _seed(app: FastAPI) -> tuple[uuid.UUID, uuid.UUID, list[int]]:
    async with unit_of_work(app.state.sessions) as session:
        run = await create_run(session)
        other = await create_run(session)
        node = await create_node(session, run)
        ids = []
        for index in range(7):
            event = await create_event(
                session,
                other if index == 3 else run,
                node_id=node.id if index % 2 else None,
                type=("node.started", "node.succeeded", "gate.waiting")[index % 3],
                ts=START + timedelta(seconds=index, microseconds=index * 1001),
                data={"index": index, "note": 'é \\ "'},
            )
            ids.append(event.id)
    return run.id, node.id, ids


def _plain(page: event_pages.Page[dict[str, Any]]) -> list[tuple[Any, ...]]:
    # The ids as UUIDs whichever way the driver gave them (asyncpg's UUID, SQLite's hex).
    return [
        (
            row["id"],
            uuid.UUID(str(row["run_id"])),
            None if row["node_id"] is None else uuid.UUID(str(row["node_id"])),
            row["type"],
            row["ts"],
            row["data"],
        )
        for row in page.items
    ]


@pytest.fixture(params=["readers", "engine"])
def reads(request: pytest.FixtureRequest, app: FastAPI) -> DriverReads:
    """On SQLite, its readers or a connection of the read engine; on PostgreSQL both are the
    engine's."""
    reads: DriverReads = app.state.driver_reads
    return reads if request.param == "readers" else DriverReads(reads.engine, None)


async def test_a_page_holds_each_event_as_stored_in_id_order(
    app: FastAPI, reads: DriverReads
) -> None:
    run_id, node_id, ids = await _seed(app)

    page = await event_pages.list_events(
        reads, run_id=run_id, types=[], after=None, limit=50, cursor=None
    )

    assert page.next_cursor is None
    assert [row["id"] for row in page.items] == [ids[index] for index in (0, 1, 2, 4, 5, 6)]
    first, second = _plain(page)[:2]
    assert first == (
        ids[0],
        run_id,
        None,
        "node.started",
        START,
        '{"index": 0, "note": "\\u00e9 \\\\ \\""}',
    )
    assert second[2] == node_id
    assert second[4] == START + timedelta(seconds=1, microseconds=1001)
    assert second[4].tzinfo is not None


async def test_filters_and_cursor_combine(app: FastAPI, reads: DriverReads) -> None:
    run_id, _, ids = await _seed(app)

    def listed(**filters: Any) -> Any:
        given = {"run_id": None, "types": [], "after": None, "limit": 50, "cursor": None}
        return event_pages.list_events(reads, **(given | filters))

    typed = await listed(types=["node.started", "gate.waiting", "node.started"])
    after = await listed(run_id=run_id, after=ids[2])
    first = await listed(limit=2)
    rest = await listed(limit=50, cursor=first.next_cursor)
    everything = await listed()

    assert [row["id"] for row in typed.items] == [ids[index] for index in (0, 2, 3, 5, 6)]
    assert [row["id"] for row in after.items] == [ids[index] for index in (4, 5, 6)]
    assert first.next_cursor is not None
    assert _plain(first) + _plain(rest) == _plain(everything)
    assert len(everything.items) == 7


async def test_an_unknown_run_is_not_found_and_a_known_one_without_events_is_empty(
    app: FastAPI, reads: DriverReads
) -> None:
    run_id, _, ids = await _seed(app)
    unknown = uuid.uuid4()

    for types, after in (([], None), (["node.started"], ids[0])):
        with pytest.raises(NotFound, match=str(unknown)):
            await event_pages.list_events(
                reads, run_id=unknown, types=types, after=after, limit=50, cursor=None
            )
    past_the_end = await event_pages.list_events(
        reads, run_id=run_id, types=[], after=ids[-1], limit=50, cursor=None
    )
    none_of_its_type = await event_pages.list_events(
        reads, run_id=run_id, types=["run.failed"], after=None, limit=1, cursor=None
    )
    assert past_the_end.items == [] and past_the_end.next_cursor is None
    assert none_of_its_type.items == [] and none_of_its_type.next_cursor is None
    with pytest.raises(BadRequest):
        await event_pages.list_events(
            reads, run_id=run_id, types=[], after=None, limit=50, cursor="bm90IGEgY3Vyc29y"
        )


async def test_type_filters_of_any_length_share_a_few_statements(
    app: FastAPI, reads: DriverReads
) -> None:
    """A statement is compiled (and on PostgreSQL prepared) per shape of the filters: the number
    of types a request names must not make a shape each."""
    _, _, ids = await _seed(app)
    before = event_pages._page_query.cache_info().currsize

    for count in range(1, 41):
        types = ["node.succeeded", "gate.waiting", *(f"other.{n}" for n in range(count - 2))]
        page = await event_pages.list_events(
            reads, run_id=None, types=types[:count], after=None, limit=50, cursor=None
        )
        expected = (1, 4) if count == 1 else (1, 2, 4, 5)
        assert [row["id"] for row in page.items] == [ids[index] for index in expected], count

    assert event_pages._page_query.cache_info().currsize - before <= 7


async def test_a_drivers_error_is_raised_as_sqlalchemys_without_its_parameters(
    app: FastAPI,
) -> None:
    engine: AsyncEngine = app.state.read_engine
    placeholder = "?" if engine.dialect.name == "sqlite" else "$1"
    async with engine.connect() as connection:
        with pytest.raises(DBAPIError) as raised:
            await fetch_all(
                connection, f"SELECT id FROM no_such_table WHERE id = {placeholder}", ["a prompt"]
            )
        assert not raised.value.connection_invalidated
        assert "no_such_table" in str(raised.value)
        assert "a prompt" not in str(raised.value)
        assert await fetch_all(connection, "SELECT 1", []) == [(1,)]


@pytest.mark.parametrize(
    ("shape", "given"),
    [
        ((0, False, False), {}),
        ((0, True, False), {"after": 0}),
        ((0, False, True), {"events_cursor_0": 0}),
        ((1, False, False), {"type_0": "node.started"}),
    ],
    ids=["first page", "after", "cursor", "of a type"],
)
async def test_a_runs_page_reads_no_more_of_its_events_than_the_page(
    app: FastAPI, shape: tuple[int, bool, bool], given: dict[str, Any]
) -> None:
    """The run's look-up rides with the page: the union must still read the events from their
    index in order and stop at the limit, not read every event of the run to sort them."""
    async with unit_of_work(app.state.sessions) as session:
        run = await create_run(session)
        events = [{"run_id": run.id, "type": "node.started", "data": {}} for _ in range(2000)]
        await session.execute(insert(Event), events)
    engine: AsyncEngine = app.state.read_engine
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            # As autovacuum would: on a table it knows nothing of, reading it all is cheapest.
            await connection.execute(text("ANALYZE events"))
    statement = event_pages._page_query(engine.dialect, True, *shape)
    parameters = statement.parameters(given | {"run_id": run.id, "limit": 6})

    async with engine.connect() as connection:
        driver: Any = (await connection.get_raw_connection()).driver_connection
        if engine.dialect.name == "sqlite":
            plan = await driver.execute_fetchall(f"EXPLAIN QUERY PLAN {statement.sql}", parameters)
            assert not [step for step in plan if "TEMP B-TREE" in step[3]], plan
        else:
            # The engine's connections decode JSON (SQLAlchemy's codec for asyncpg).
            explained = await driver.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {statement.sql}", *parameters
            )
            scans = list(_plan_nodes(explained[0]["Plan"]))
            read = [
                node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
                for node in scans
                if node.get("Relation Name") == "events"
            ]
            assert read and max(read) <= 6, scans


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)
