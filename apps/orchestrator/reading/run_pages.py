"""The runs list as SQLite writes it: each run's JSON built by the database, the page by joining.

The list is the API's busiest read. Through the driver's usual path a page costs a thread
hand-off per step of a cursor (five), a parse of five timestamps and two JSON documents per run
and a dict per run, before any encoding; here SQLite writes each run as the API's JSON text (the
shape of `RunSummary` in UTC, `tests/api/test_list_encoding.py` holds them equal) in one call of
the driver's thread, and the page is the runs' texts joined, with the cursor of the last one.
The cost is written by SQLite's JSON, with 15 significant digits, as `GET /runs/{run_id}` and
the list have always shown it.

A page this cannot write says so with None, and the caller takes `runs.list_runs`: a search
served by the title index (several statements), or a timestamp not stored as UTCDateTime writes
it (`YYYY-MM-DD HH:MM:SS.ffffff`), which no row of this version holds.
"""

import uuid
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, cast

import orjson
from sqlalchemy import Select, bindparam, literal_column, select
from sqlalchemy.dialects import sqlite
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

_DIALECT = sqlite.dialect()
_CANONICAL = "[0-9]" * 4 + "-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]." + "[0-9]" * 6
_TIMESTAMPS = ("created_at", "updated_at", "started_at", "finished_at", "cancel_requested_at")


def _timestamp(column: str) -> str:
    # 2026-01-02 03:04:05.000120 -> "2026-01-02T03:04:05.000120Z"; no fraction when it is zero.
    value = f"runs.{column}"
    return (
        f"CASE WHEN {value} IS NULL THEN 'null' ELSE '\"' || substr({value}, 1, 10) || 'T' || "
        f"substr({value}, 12, 8) || CASE WHEN substr({value}, 20) = '.000000' THEN '' "
        f"ELSE substr({value}, 20) END || 'Z\"' END"
    )


def _canonical() -> str:
    checks = [f"runs.{c} IS NULL OR runs.{c} GLOB '{_CANONICAL}'" for c in _TIMESTAMPS]
    return " AND ".join(f"({check})" for check in checks)


def _node_counts() -> str:
    counts = ", ".join(
        f"'{status.value}', count(*) FILTER (WHERE nodes.status = '{status.value}')"
        for status in NodeStatus
    )
    return f"(SELECT json_object({counts}) FROM nodes WHERE nodes.run_id = runs.id)"


def _item() -> str:
    """The run's JSON."""
    run_id = "lower(runs.id)"
    dashed = (
        f"substr({run_id}, 1, 8) || '-' || substr({run_id}, 9, 4) || '-' || "
        f"substr({run_id}, 13, 4) || '-' || substr({run_id}, 17, 4) || '-' || substr({run_id}, 21)"
    )
    task_type = (
        "json_quote(CASE WHEN json_valid(runs.task_spec) "
        "THEN CAST(json_extract(runs.task_spec, '$.\"type\"') AS TEXT) END)"
    )
    fields = [
        f"'{{\"id\":\"' || {dashed} || '\"'",
        "',\"title\":' || json_quote(runs.title)",
        "',\"status\":' || json_quote(runs.status)",
        f"',\"task_type\":' || {task_type}",
        "',\"error\":' || json_quote(runs.error)",
        "',\"created_by\":' || json_quote(runs.created_by)",
        *(f"',\"{column}\":' || {_timestamp(column)}" for column in _TIMESTAMPS),
        f"',\"node_counts\":' || {_node_counts()}",
        '\',"usage":{"prompt_tokens":\' || CAST(runs.prompt_tokens AS INTEGER)',
        "',\"completion_tokens\":' || CAST(runs.completion_tokens AS INTEGER)",
        "',\"total_tokens\":' || CAST(runs.total_tokens AS INTEGER)",
        "',\"cost\":' || json_quote(runs.cost) || '}}'",
    ]
    return f"CASE WHEN {_canonical()} THEN {' || '.join(fields)} END"


@lru_cache(maxsize=64)
def _page_query(filters: frozenset[str], resumed: bool) -> tuple[str, tuple[str, ...], Any]:
    """The page's SQL for these filters, its parameters' names in order, and the statement
    compiled (for the values of its own constants)."""
    statement: Select[*tuple[Any, ...]] = select(
        literal_column(_item()).label("item"), Run.created_at, Run.id
    ).select_from(RUNS)
    if "title" in filters:
        statement = statement.where(title_contains("sqlite"))
    statement = filtered(statement, filters, resumed)
    statement = statement.order_by(*RUN_ORDER.order_by()).limit(bindparam("limit"))
    compiled = statement.compile(dialect=_DIALECT)
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
    """The page `runs.list_runs` would give, as `Page[RunSummary]` JSON in UTC, on SQLite;
    None when this cannot write it (see the module's docstring)."""
    if uses_title_index(where):
        return None
    filters = filter_parameters(where, "sqlite")
    position = RUN_ORDER.cursor_parameters(cursor) if cursor is not None else {}
    sql, names, compiled = _page_query(frozenset(filters), resumed=cursor is not None)
    given = {name: _as_stored(value) for name, value in {**filters, **position}.items()}
    values = compiled.construct_params({**given, "limit": limit + 1})
    raw = await connection.get_raw_connection()
    # One call of aiosqlite's thread: the statement and every row.
    driver = cast(Any, raw.driver_connection)
    rows = await driver.execute_fetchall(sql, [values[name] for name in names])
    return _page(list(rows), limit)


def _page(rows: list[Any], limit: int) -> bytes | None:
    items = rows[:limit]
    if any(item is None for item, *_ in items):
        return None
    body = ",".join(item for item, *_ in items).encode()
    next_cursor = None
    if len(rows) > limit:
        _, created_at, run_id = items[-1]
        key = {"created_at": datetime.fromisoformat(created_at + "+00:00"), "id": run_id}
        next_cursor = RUN_ORDER.cursor_of(key)
    return b'{"items":[' + body + b'],"next_cursor":' + orjson.dumps(next_cursor) + b"}"
