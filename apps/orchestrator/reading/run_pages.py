"""The runs list as the database writes it: each run's JSON text read from its row, the page by
joining.

The list is the API's busiest read. Through the driver's usual path a page costs, per run, a
parse of five timestamps and two JSON documents, a dict and its encoding, and on SQLite a thread
hand-off per step of a cursor (five); here each run's JSON is text the database wrote with the row
(migration 0007: `summary_head` and `summary_tail`, the shape of `RunSummary` in UTC;
`tests/api/test_list_encoding.py` holds the two equal), around its node counts (SQLite's kept by
triggers in `run_node_counts`, PostgreSQL's counted by the page: the migration says why), the
driver is called once (aiosqlite: one hand-off to its thread, on one of SQLite's readers rather
than a connection of the engine's pool, see `core.read_connections`; asyncpg: one prepared
statement), and the page is the runs' texts joined, with the cursor of the last one: on SQLite
here, on PostgreSQL by the database too, which hands back the page's items as one UTF-8 value.

A page this cannot write says so with None, and the caller takes `runs.list_runs`: a search
SQLite's title index serves (several statements), or on SQLite a run whose head is NULL (a
timestamp not stored as UTCDateTime writes it, `YYYY-MM-DD HH:MM:SS.ffffff`, which no row of this
version holds).
"""

from datetime import datetime
from functools import lru_cache
from typing import Any

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
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.core.read_connections import SqliteReaders
from apps.orchestrator.model.models import RUNS, Run
from apps.orchestrator.model.states import NodeStatus
from apps.orchestrator.reading.driver_calls import DriverStatement, fetch_all
from apps.orchestrator.reading.runs import (
    RUN_ORDER,
    RunFilter,
    filter_parameters,
    filtered,
    title_contains,
    uses_title_index,
)


def _sqlite_node_counts() -> str:
    # Kept by triggers on nodes (migration 0007); a run with no node has no row. The object's
    # text written by one printf: json_object's is twice the cost.
    template = ",".join(f'"{status.value}":%d' for status in NodeStatus)
    counts = ", ".join(f"run_node_counts.{status.value}" for status in NodeStatus)
    none = "{" + ",".join(f'"{status.value}":0' for status in NodeStatus) + "}"
    return (
        f"coalesce((SELECT printf('{{{template}}}', {counts}) FROM run_node_counts "
        f"WHERE run_node_counts.run_id = runs.id), '{none}')"
    )


def _postgres_node_counts() -> str:
    # The object's text written by concat: json_build_object's own is half the cost again.
    counts = ", ".join(
        f"'{',' if index else '{'}\"{status.value}\":', "
        f"count(*) FILTER (WHERE nodes.status = '{status.value}')"
        for index, status in enumerate(NodeStatus)
    )
    return f"(SELECT concat({counts}, '}}') FROM nodes WHERE nodes.run_id = runs.id)"


def _item(node_counts: str) -> str:
    # The run's own text around its node counts; NULL when the head is (see the docstring).
    return f"runs.summary_head || {node_counts} || runs.summary_tail"


_ITEMS = {"sqlite": _sqlite_node_counts, "postgresql": _postgres_node_counts}


@lru_cache(maxsize=512)
def _page_query(
    dialect: Dialect, filters: frozenset[str], resumed: bool, size: int | None = None
) -> DriverStatement:
    """The page's statement for these filters; the page's size written into the SQL when
    `size` is given, else a parameter too."""
    item: Label[str] = literal_column(_item(_ITEMS[dialect.name]())).label("item")
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
    return DriverStatement.of(statement, dialect)


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


def _page_statement(
    dialect: Dialect, where: RunFilter, limit: int, cursor: str | None
) -> tuple[str, list[Any]] | None:
    """The page's SQL in the driver's own parameter style and its parameters; None when this
    cannot write the page (see the module's docstring)."""
    if dialect.name not in _ITEMS or (dialect.name == "sqlite" and uses_title_index(where)):
        return None
    filters = filter_parameters(where, dialect.name)
    position = RUN_ORDER.cursor_parameters(cursor) if cursor is not None else {}
    resumed = cursor is not None
    # PostgreSQL plans a prepared statement afresh at each execution (a custom plan) as long as
    # the plan it would keep (generic: parameters unknown) looks dearer, as it does when the
    # page's size is a parameter: with it written in, PostgreSQL keeps one plan per statement,
    # and a page no longer pays for its planning. Not for a title search: a generic plan cannot
    # tell a rare text from a common one, and reads every title for the rare.
    planned_once = dialect.name == "postgresql" and "title" not in filters
    statement = _page_query(dialect, frozenset(filters), resumed, limit if planned_once else None)
    parameters = statement.parameters({**filters, **position, "limit": limit + 1, "size": limit})
    return statement.sql, parameters


async def run_page_json(
    connection: AsyncConnection, where: RunFilter, limit: int, cursor: str | None
) -> bytes | None:
    """The page `runs.list_runs` would give, as `Page[RunSummary]` JSON in UTC; None when this
    cannot write it (see the module's docstring)."""
    statement = _page_statement(connection.dialect, where, limit, cursor)
    if statement is None:
        return None
    rows = await fetch_all(connection, *statement)
    if connection.dialect.name == "sqlite":
        return _page(rows, limit)
    [(items, read, *key)] = rows
    return _page_of(items or b"", key if read > limit else None)


async def sqlite_run_page_json(
    readers: SqliteReaders, dialect: Dialect, where: RunFilter, limit: int, cursor: str | None
) -> bytes | None:
    """`run_page_json` on SQLite's readers (`core.read_connections`), without a connection
    of the engine's pool; `dialect` is the engine's."""
    statement = _page_statement(dialect, where, limit, cursor)
    if statement is None:
        return None
    return _page(await readers.fetch_all(*statement), limit)


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
