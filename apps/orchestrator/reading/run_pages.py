"""The runs list as the database writes it: each run's JSON built by SQL, the page by joining.

The list is the API's busiest read. Through the driver's usual path a page costs, per run, a
parse of five timestamps and two JSON documents, a dict and its encoding, and on SQLite a thread
hand-off per step of a cursor (five); here the database writes each run as the API's JSON text
(the shape of `RunSummary` in UTC; `tests/api/test_list_encoding.py` holds the two equal), the
driver is called once (aiosqlite: one hand-off to its thread; asyncpg: one prepared statement),
and the page is the runs' texts joined, with the cursor of the last one. The cost is written as
`GET /runs/{run_id}` writes it: by SQLite's JSON (15 significant digits), by PostgreSQL's
shortest exact text of the number (with `.0` when it is whole, as pydantic writes a float).

A page this cannot write says so with None, and the caller takes `runs.list_runs`: a search
SQLite's title index serves (several statements), or on SQLite a timestamp not stored as
UTCDateTime writes it (`YYYY-MM-DD HH:MM:SS.ffffff`), which no row of this version holds.
"""

import uuid
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, cast

import orjson
from sqlalchemy import Dialect, Select, bindparam, literal_column, select
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
    # 2026-01-02 03:04:05.000120 -> "2026-01-02T03:04:05.000120Z"; no fraction when it is zero.
    return (
        f"CASE WHEN {value} IS NULL THEN 'null' ELSE '\"' || substr({value}, 1, 10) || 'T' || "
        f"substr({value}, 12, 8) || CASE WHEN substr({value}, 20) = '.000000' THEN '' "
        f"ELSE substr({value}, 20) END || 'Z\"' END"
    )


def _postgres_timestamp(value: str) -> str:
    utc = f"({value} AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN {value} IS NULL THEN 'null' ELSE "
        f"'\"' || to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
        f"CASE WHEN date_trunc('second', {value}) = {value} THEN '' "
        f"ELSE to_char({utc}, '.US') END || 'Z\"' END"
    )


def _node_counts(json_object: str) -> str:
    counts = ", ".join(
        f"'{status.value}', count(*) FILTER (WHERE nodes.status = '{status.value}')"
        for status in NodeStatus
    )
    return f"(SELECT {json_object}({counts}) FROM nodes WHERE nodes.run_id = runs.id)"


def _sqlite_item() -> str:
    run_id = "lower(runs.id)"
    dashed = (
        f"substr({run_id}, 1, 8) || '-' || substr({run_id}, 9, 4) || '-' || "
        f"substr({run_id}, 13, 4) || '-' || substr({run_id}, 17, 4) || '-' || substr({run_id}, 21)"
    )
    task_type = (
        "json_quote(CASE WHEN json_valid(runs.task_spec) "
        "THEN CAST(json_extract(runs.task_spec, '$.\"type\"') AS TEXT) END)"
    )
    fields = _fields(
        run_id=dashed,
        text="json_quote({})",
        task_type=task_type,
        timestamp=_sqlite_timestamp,
        node_counts=_node_counts("json_object"),
        integer="CAST({} AS INTEGER)",
        cost="json_quote(runs.cost)",
    )
    canonical = " AND ".join(
        f"(runs.{c} IS NULL OR runs.{c} GLOB '{_CANONICAL}')" for c in _TIMESTAMPS
    )
    return f"CASE WHEN {canonical} THEN {fields} END"


def _postgres_item() -> str:
    cost = "CAST(runs.cost AS TEXT)"
    return _fields(
        run_id="CAST(runs.id AS TEXT)",
        text="coalesce(CAST(to_json({}) AS TEXT), 'null')",
        task_type="coalesce(CAST(to_json(runs.task_spec ->> 'type') AS TEXT), 'null')",
        timestamp=_postgres_timestamp,
        node_counts=f"CAST({_node_counts('json_build_object')} AS TEXT)",
        integer="CAST({} AS TEXT)",
        # Whole numbers come back without a point ("2"); pydantic writes a float as 2.0.
        cost=f"CASE WHEN {cost} ~ '^-?[0-9]+$' THEN {cost} || '.0' ELSE {cost} END",
    )


def _fields(
    *,
    run_id: str,
    text: str,
    task_type: str,
    timestamp: Any,
    node_counts: str,
    integer: str,
    cost: str,
) -> str:
    """The run's JSON as one SQL text expression, from each dialect's way of writing a part."""
    parts = [
        f"'{{\"id\":\"' || {run_id} || '\"'",
        f"',\"title\":' || {text.format('runs.title')}",
        f"',\"status\":' || {text.format('runs.status')}",
        f"',\"task_type\":' || {task_type}",
        f"',\"error\":' || {text.format('runs.error')}",
        f"',\"created_by\":' || {text.format('runs.created_by')}",
        *(f"',\"{column}\":' || {timestamp(f'runs.{column}')}" for column in _TIMESTAMPS),
        f"',\"node_counts\":' || {node_counts}",
        f'\',"usage":{{"prompt_tokens":\' || {integer.format("runs.prompt_tokens")}',
        f"',\"completion_tokens\":' || {integer.format('runs.completion_tokens')}",
        f"',\"total_tokens\":' || {integer.format('runs.total_tokens')}",
        f"',\"cost\":' || {cost} || '}}}}'",
    ]
    return " || ".join(parts)


_ITEMS = {"sqlite": _sqlite_item, "postgresql": _postgres_item}


@lru_cache(maxsize=128)
def _page_query(
    dialect: Dialect, filters: frozenset[str], resumed: bool
) -> tuple[str, tuple[str, ...], Any]:
    """The page's SQL for these filters in the driver's own parameter style, its parameters'
    names in order, and the statement compiled (for the values of its own constants)."""
    statement: Select[*tuple[Any, ...]] = select(
        literal_column(_ITEMS[dialect.name]()).label("item"), Run.created_at, Run.id
    ).select_from(RUNS)
    if "title" in filters:
        statement = statement.where(title_contains(dialect.name))
    statement = filtered(statement, filters, resumed)
    statement = statement.order_by(*RUN_ORDER.order_by()).limit(bindparam("limit"))
    compiled = statement.compile(dialect=dialect)
    return str(compiled), tuple(compiled.positiontup or ()), compiled


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
    sql, names, compiled = _page_query(connection.dialect, frozenset(filters), resumed)
    given = {**filters, **position}
    if dialect == "sqlite":
        given = {name: _as_stored(value) for name, value in given.items()}
    values = compiled.construct_params({**given, "limit": limit + 1})
    parameters = [values[name] for name in names]
    # The driver itself, called once: aiosqlite hands the statement and the fetch of every row
    # to its thread in one go, asyncpg prepares the statement once per connection.
    driver = cast(Any, (await connection.get_raw_connection()).driver_connection)
    try:
        if dialect == "sqlite":
            rows = list(await driver.execute_fetchall(sql, parameters))
        else:
            rows = await driver.fetch(sql, *parameters)
    except Exception as error:
        raise await _database_error(connection, driver, sql, parameters, error) from error
    return _page(rows, limit)


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
    items = rows[:limit]
    if any(item is None for item, *_ in items):
        return None
    body = ",".join(item for item, *_ in items).encode()
    next_cursor = None
    if len(rows) > limit:
        _, created_at, run_id = items[-1]
        if isinstance(created_at, str):  # SQLite's text
            created_at = datetime.fromisoformat(created_at + "+00:00")
        next_cursor = RUN_ORDER.cursor_of({"created_at": created_at, "id": run_id})
    return b'{"items":[' + body + b'],"next_cursor":' + orjson.dumps(next_cursor) + b"}"
