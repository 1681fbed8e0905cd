"""The runs list as the database writes it: each run's JSON built by SQL, the page by joining.

The list is the API's busiest read. Through the driver's usual path a page costs, per run, a
parse of five timestamps and two JSON documents, a dict and its encoding, and on SQLite a thread
hand-off per step of a cursor (five); here the database writes each run as the API's JSON text
(the shape of `RunSummary` in UTC; `tests/api/test_list_encoding.py` holds the two equal), the
driver is called once (aiosqlite: one hand-off to its thread; asyncpg: one prepared statement),
and the page is the runs' texts joined, with the cursor of the last one: on SQLite here, on
PostgreSQL by the database too, which hands back the page's items as one UTF-8 value. The cost
is written as `GET /runs/{run_id}` writes it: by SQLite's JSON (15 significant digits), by
PostgreSQL's shortest exact text of the number (with `.0` when it is whole, as pydantic writes a
float).

A page this cannot write says so with None, and the caller takes `runs.list_runs`: a search
SQLite's title index serves (several statements), or on SQLite a timestamp not stored as
UTCDateTime writes it (`YYYY-MM-DD HH:MM:SS.ffffff`), which no row of this version holds.
"""

import uuid
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, cast

import orjson
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Dialect,
    Integer,
    Label,
    Select,
    Subquery,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.orchestrator.model.models import RUNS, Run
from apps.orchestrator.model.states import NodeStatus
from apps.orchestrator.reading.runs import (
    RUN_ORDER,
    RunFilter,
    filter_parameters,
    filtered,
    title_contains,
    uses_title_index,
)

_CANONICAL = "[0-9]" * 4 + "-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]." + "[0-9]" * 6
_TIMESTAMPS = ("created_at", "updated_at", "started_at", "finished_at", "cancel_requested_at")


def _sqlite_timestamp(value: str) -> str:
    # 2026-01-02 03:04:05.000120 -> "2026-01-02T03:04:05.000120Z"; no fraction when it is zero
    # (the text is canonical, so it has one ' ' and one '.'). NULL stays NULL through ||.
    text = f"replace(replace({value}, ' ', 'T'), '.000000', '')"
    return f"coalesce('\"' || {text} || 'Z\"', 'null')"


def _postgres_timestamp(value: str) -> str:
    # One to_char with the fraction; a whole second drops it, as pydantic writes it (the text
    # has one '.', so the replace touches nothing else).
    text = f"to_char(({value} AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    return (
        f"CASE WHEN {value} IS NULL THEN 'null' "
        f"ELSE concat('\"', replace({text}, '.000000', ''), 'Z\"') END"
    )


def _sqlite_node_counts() -> str:
    # The object's text written by one printf: json_object's is twice the cost.
    template = ",".join(f'"{status.value}":%d' for status in NodeStatus)
    counts = ", ".join(
        f"count(*) FILTER (WHERE nodes.status = '{status.value}')" for status in NodeStatus
    )
    return f"(SELECT printf('{{{template}}}', {counts}) FROM nodes WHERE nodes.run_id = runs.id)"


def _postgres_node_counts() -> str:
    # The object's text written by concat: json_build_object's own is half the cost again.
    counts = ", ".join(
        f"'{',' if index else '{'}\"{status.value}\":', "
        f"count(*) FILTER (WHERE nodes.status = '{status.value}')"
        for index, status in enumerate(NodeStatus)
    )
    return f"(SELECT concat({counts}, '}}') FROM nodes WHERE nodes.run_id = runs.id)"


def _sqlite_item() -> str:
    run_id = "lower(runs.id)"
    dashed = (
        f"printf('%.8s-%.4s-%.4s-%.4s-%s', {run_id}, substr({run_id}, 9), "
        f"substr({run_id}, 13), substr({run_id}, 17), substr({run_id}, 21))"
    )
    fields = _printf(
        _fields(
            run_id=dashed,
            text="json_quote({})",
            timestamp=_sqlite_timestamp,
            node_counts=_sqlite_node_counts(),
            integer="printf('%d', {})",
            cost="json_quote(runs.cost)",
        )
    )
    canonical = " AND ".join(
        f"(runs.{c} IS NULL OR runs.{c} GLOB '{_CANONICAL}')" for c in _TIMESTAMPS
    )
    return f"CASE WHEN {canonical} THEN {fields} END"


def _printf(parts: list[str]) -> str:
    """SQLite's printf writing `parts` (SQL string literals and expressions) in one go: a chain
    of || copies the text again at every step, a third of what SQLite spent on a page."""
    template, arguments = [], []
    for part in parts:
        if len(part) >= 2 and part[0] == part[-1] == "'" and "'" not in part[1:-1]:
            template.append(part[1:-1].replace("%", "%%"))
        else:
            template.append("%s")
            arguments.append(part)
    return f"printf('{''.join(template)}', {', '.join(arguments)})"


def _postgres_item() -> str:
    cost = "CAST(runs.cost AS TEXT)"
    parts = _fields(
        run_id="CAST(runs.id AS TEXT)",
        text="coalesce(CAST(to_json({}) AS TEXT), 'null')",
        timestamp=_postgres_timestamp,
        node_counts=_postgres_node_counts(),
        integer="CAST({} AS TEXT)",
        # Whole numbers come back without a point ("2"); pydantic writes a float as 2.0.
        cost=f"CASE WHEN {cost} ~ '^-?[0-9]+$' THEN {cost} || '.0' ELSE {cost} END",
    )
    # One concat writes the text once; a chain of || copies it again at every step.
    return f"concat({', '.join(parts)})"


def _fields(
    *,
    run_id: str,
    text: str,
    timestamp: Any,
    node_counts: str,
    integer: str,
    cost: str,
) -> list[str]:
    """The run's JSON as the SQL text expressions that make it, in order, from each dialect's way
    of writing a part."""
    return [
        '\'{"id":"\'',
        run_id,
        '\'","title":\'',
        text.format("runs.title"),
        "',\"status\":'",
        text.format("runs.status"),
        "',\"task_type\":'",
        text.format("runs.task_type"),
        "',\"error\":'",
        text.format("runs.error"),
        "',\"created_by\":'",
        text.format("runs.created_by"),
        *(
            part
            for column in _TIMESTAMPS
            for part in (f"',\"{column}\":'", timestamp(f"runs.{column}"))
        ),
        "',\"node_counts\":'",
        node_counts,
        '\',"usage":{"prompt_tokens":\'',
        integer.format("runs.prompt_tokens"),
        "',\"completion_tokens\":'",
        integer.format("runs.completion_tokens"),
        "',\"total_tokens\":'",
        integer.format("runs.total_tokens"),
        "',\"cost\":'",
        cost,
        "'}}'",
    ]


_ITEMS = {"sqlite": _sqlite_item, "postgresql": _postgres_item}


@lru_cache(maxsize=512)
def _page_query(
    dialect: Dialect, filters: frozenset[str], resumed: bool, size: int | None = None
) -> tuple[str, tuple[str, ...], Any]:
    """The page's SQL for these filters in the driver's own parameter style, its parameters'
    names in order, and the statement compiled (for the values of its own constants); the
    page's size written into the SQL when `size` is given, else a parameter too."""
    item: Label[str] = literal_column(_ITEMS[dialect.name]()).label("item")
    columns: list[Any] = [item, Run.created_at, Run.id]
    if dialect.name == "postgresql":
        columns.append(func.row_number().over(order_by=RUN_ORDER.order_by()).label("n"))
    statement: Select[*tuple[Any, ...]] = select(*columns).select_from(RUNS)
    if "title" in filters:
        statement = statement.where(title_contains(dialect.name))
    statement = filtered(statement, filters, resumed)
    read: ColumnElement[int] = bindparam("limit") if size is None else literal_column(str(size + 1))
    statement = statement.order_by(*RUN_ORDER.order_by()).limit(read)
    if dialect.name == "postgresql":
        statement = _one_row(statement.subquery("page"))
    compiled = statement.compile(dialect=dialect)
    return str(compiled), tuple(compiled.positiontup or ()), compiled


def _one_row(page: Subquery) -> Select[*tuple[Any, ...]]:
    """The page's rows (`limit` + 1 of them, numbered) as one row: the first `size` runs' JSON
    joined into the page's items, as UTF-8 bytes, the number of rows read, and the key of the
    `size`-th run, which the next cursor names when more rows were read than the page holds.

    One value instead of a row per run: the driver decodes one text, not `size` rows of three
    values each, and the page's bytes are the response's without a decode and an encode."""
    size: BindParameter[int] = bindparam("size", type_=Integer)
    last = page.c.n == size
    items = func.string_agg(page.c.item, aggregate_order_by(literal_column("','"), page.c.n))
    return select(
        func.convert_to(items.filter(page.c.n <= size), literal_column("'UTF8'")),
        func.count(),
        func.array_agg(page.c.created_at).filter(last)[1],
        func.array_agg(page.c.id).filter(last)[1],
    )


def _as_stored(value: Any) -> Any:
    """A parameter as SQLite holds the column: naive UTC text, or a UUID's hex."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]
    if isinstance(value, uuid.UUID):
        return value.hex
    return value


async def run_page_json(
    connection: AsyncConnection, where: RunFilter, limit: int, cursor: str | None
) -> bytes | None:
    """The page `runs.list_runs` would give, as `Page[RunSummary]` JSON in UTC; None when this
    cannot write it (see the module's docstring)."""
    dialect = connection.dialect.name
    if dialect not in _ITEMS or (dialect == "sqlite" and uses_title_index(where)):
        return None
    filters = filter_parameters(where, dialect)
    position = RUN_ORDER.cursor_parameters(cursor) if cursor is not None else {}
    resumed = cursor is not None
    # PostgreSQL plans a prepared statement afresh at each execution (a custom plan) as long as
    # the plan it would keep (generic: parameters unknown) looks dearer, as it does when the
    # page's size is a parameter: with it written in, PostgreSQL keeps one plan per statement,
    # and a page no longer pays for its planning. Not for a title search: a generic plan cannot
    # tell a rare text from a common one, and reads every title for the rare.
    planned_once = dialect == "postgresql" and "title" not in filters
    sql, names, compiled = _page_query(
        connection.dialect, frozenset(filters), resumed, limit if planned_once else None
    )
    given = {**filters, **position}
    if dialect == "sqlite":
        given = {name: _as_stored(value) for name, value in given.items()}
    values = compiled.construct_params({**given, "limit": limit + 1, "size": limit})
    parameters = [values[name] for name in names]
    # The driver itself, called once: aiosqlite hands the statement and the fetch of every row
    # to its thread in one go, asyncpg prepares the statement once per connection.
    driver = cast(Any, (await connection.get_raw_connection()).driver_connection)
    try:
        if dialect == "sqlite":
            rows = list(await driver.execute_fetchall(sql, parameters))
        else:
            items, read, *key = await driver.fetchrow(sql, *parameters)
    except Exception as error:
        raise await _database_error(connection, driver, sql, parameters, error) from error
    if dialect == "sqlite":
        return _page(rows, limit)
    return _page_of(items or b"", key if read > limit else None)


async def _database_error(
    connection: AsyncConnection, driver: Any, sql: str, parameters: list[Any], error: Exception
) -> DBAPIError:
    """The driver's error as SQLAlchemy raises one of a statement of its own: a DBAPIError,
    which the API answers 503 when it is transient. A connection the server dropped is
    invalidated, so that the pool does not hand it out again."""
    dropped = connection.dialect.name == "postgresql" and driver.is_closed()
    if dropped:
        await connection.invalidate(error)
    return DBAPIError(sql, parameters, error, connection_invalidated=dropped)


def _page(rows: list[Any], limit: int) -> bytes | None:
    """The page of SQLite's rows: a run's JSON, its creation time as text and its id each."""
    items = rows[:limit]
    if any(item is None for item, *_ in items):
        return None
    body = ",".join(item for item, *_ in items).encode()
    key = None
    if len(rows) > limit:
        _, created_at, run_id = items[-1]
        key = [datetime.fromisoformat(created_at + "+00:00"), run_id]
    return _page_of(body, key)


def _page_of(items: bytes, key: list[Any] | None) -> bytes:
    """The page's JSON from its items' and the key (creation time, id) of its last run, when
    the list goes on after it."""
    next_cursor = None
    if key is not None:
        created_at, run_id = key
        next_cursor = RUN_ORDER.cursor_of({"created_at": created_at, "id": run_id})
    return b'{"items":[' + items + b'],"next_cursor":' + orjson.dumps(next_cursor) + b"}"
