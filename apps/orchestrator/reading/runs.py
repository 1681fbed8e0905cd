"""Reading runs: the newest-first list with its filters, and one run with its node counts.

The list is the API's hot path. Its statements are built once per dialect and filter shape, with
parameters bound at execution; they select only the columns a run's answer has, and hand the JSON
parts (node counts by status, usage totals, and for one run its `task_spec`) back as text for the
response model to parse, so one page is one round trip and no per-value conversion in Python.

A run in the list is a summary: its spec's type (a column of its own, written with the spec), not
the spec, which may be megabytes (500 nodes of 20,000-character prompts). A page's size is
bounded whatever the runs hold.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Text,
    Uuid,
    bindparam,
    cast,
    func,
    select,
    text,
    tuple_,
    type_coerce,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from apps.core.errors import NotFound
from apps.orchestrator.model.models import RUNS, Node, Run, UTCDateTime
from apps.orchestrator.model.states import RunStatus
from apps.orchestrator.reading.pagination import Keyset, Page, as_dicts

# Newest first; the id settles runs created in the same microsecond.
RUN_ORDER = Keyset("runs", RUNS.c.created_at, RUNS.c.id, descending=True)

_JSON_OBJECT = {"sqlite": func.json_object, "postgresql": func.json_build_object}
_JSON_OBJECT_AGG = {"sqlite": func.json_group_object, "postgresql": func.json_object_agg}


@dataclass(frozen=True, slots=True)
class RunFilter:
    status: RunStatus | None = None
    title_contains: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _node_counts(dialect: str) -> ColumnElement[str]:
    """The run's node counts by status as a JSON object, correlated to the outer run row."""
    per_status = (
        select(Node.status, func.count().label("n"))
        .where(Node.run_id == Run.id)
        .group_by(Node.status)
        .correlate(Run)
        .subquery()
    )
    counts = select(_JSON_OBJECT_AGG[dialect](per_status.c.status, per_status.c.n))
    # PostgreSQL aggregates no rows to NULL where SQLite gives {}.
    return func.coalesce(cast(counts.scalar_subquery(), Text), "{}").label("node_counts")


def _usage(dialect: str) -> ColumnElement[str]:
    totals = _JSON_OBJECT[dialect](
        "prompt_tokens",
        Run.prompt_tokens,
        "completion_tokens",
        Run.completion_tokens,
        "total_tokens",
        Run.total_tokens,
        "cost",
        Run.cost,
    )
    return cast(totals, Text).label("usage")


def _select_runs(dialect: str, *, with_spec: bool = False) -> Select[*tuple[Any, ...]]:
    spec = [cast(Run.task_spec, Text).label("task_spec")] if with_spec else []
    return select(
        # The id as the driver gives it (hex text on SQLite): the response model parses it faster
        # than a UUID type processor does.
        type_coerce(Run.id, String).label("id"),
        Run.title,
        Run.status,
        Run.task_type,
        *spec,
        Run.error,
        Run.created_by,
        Run.created_at,
        Run.updated_at,
        Run.started_at,
        Run.finished_at,
        Run.cancel_requested_at,
        _node_counts(dialect),
        _usage(dialect),
    )


def title_contains(dialect: str) -> ColumnElement[bool]:
    pattern = bindparam("title", type_=Text)
    if dialect == "sqlite":
        # SQLite's LIKE folds ASCII only; `casefold` is registered on its connections.
        return func.casefold(Run.title).like(pattern, escape="\\")
    return Run.title.ilike(pattern, escape="\\")


# Title search on SQLite (`_search_sqlite`): the newest runs are read in order and checked one by
# one up to this many, which finds a common word's page at once; past them the trigram index
# names the candidates, which finds a rare word's page at once.
SEARCH_WINDOW = 2_000
# The index reads trigrams: a text shorter than this is matched by reading the titles.
TRIGRAM = 3
_KEY = tuple_(Run.created_at, Run.id)
_FLOOR = tuple_(bindparam("floor_created_at", type_=UTCDateTime), bindparam("floor_id", type_=Uuid))
_INDEXED = text(
    "runs.rowid IN (SELECT rowid FROM runs_title_fts WHERE runs_title_fts MATCH :phrase)"
).bindparams(bindparam("phrase", type_=Text))


def filtered(
    statement: Select[*tuple[Any, ...]], filters: frozenset[str], resumed: bool
) -> Select[*tuple[Any, ...]]:
    if "status" in filters:
        statement = statement.where(Run.status == bindparam("status"))
    if "after" in filters:
        statement = statement.where(Run.created_at >= bindparam("after", type_=UTCDateTime))
    if "before" in filters:
        statement = statement.where(Run.created_at < bindparam("before", type_=UTCDateTime))
    if resumed:
        statement = statement.where(RUN_ORDER.resume_after())
    return statement


@lru_cache(maxsize=16)
def _floor_statement(filters: frozenset[str], resumed: bool) -> Select[Any]:
    """The key of the last run of the search window: the SEARCH_WINDOW-th run the other filters
    keep after the cursor (SQLite)."""
    statement = filtered(select(Run.created_at, Run.id), filters, resumed)
    return statement.order_by(*RUN_ORDER.order_by()).offset(SEARCH_WINDOW - 1).limit(1)


@lru_cache(maxsize=128)
def _list_statement(dialect: str, filters: frozenset[str], resumed: bool) -> Select[Any]:
    """The list statement for the filters named by their parameters' names, after a cursor
    when `resumed`; on SQLite, `window` keeps the runs at or before the search window's last
    run, `indexed` those after it that the title index names."""
    statement = _select_runs(dialect)
    if "title" in filters:
        statement = statement.where(title_contains(dialect))
    if "window" in filters:
        statement = statement.where(_KEY >= _FLOOR)
    if "indexed" in filters:
        statement = statement.where(_KEY < _FLOOR, _INDEXED)
    statement = filtered(statement, filters, resumed)
    return statement.order_by(*RUN_ORDER.order_by()).limit(bindparam("limit"))


@lru_cache(maxsize=4)
def _get_statement(dialect: str) -> Select[Any]:
    return _select_runs(dialect, with_spec=True).where(Run.id == bindparam("run_id", type_=Uuid))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filter_parameters(where: RunFilter, dialect: str) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    if where.status is not None:
        parameters["status"] = where.status
    if where.title_contains:
        text = where.title_contains.casefold() if dialect == "sqlite" else where.title_contains
        parameters["title"] = f"%{_escape_like(text)}%"
    if where.created_after is not None:
        parameters["after"] = where.created_after
    if where.created_before is not None:
        parameters["before"] = where.created_before
    return parameters


def _with_task_spec(row: dict[str, Any]) -> dict[str, Any]:
    # Parsed per request, never cached: a spec may be megabytes.
    row["task_spec"] = json.loads(row["task_spec"])
    return row


def _dialect(connection: AsyncConnection) -> str:
    return connection.dialect.name


async def list_runs(
    connection: AsyncConnection, where: RunFilter, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    """Summaries of the runs matching `where`, newest first, `limit` at a time after `cursor`."""
    dialect = _dialect(connection)
    filters = filter_parameters(where, dialect)
    position = RUN_ORDER.cursor_parameters(cursor) if cursor is not None else {}
    if dialect == "sqlite" and uses_title_index(where):
        phrase = _phrase((where.title_contains or "").casefold())
        rows = await _search_sqlite(connection, filters, position, limit, phrase)
    else:
        statement = _list_statement(dialect, frozenset(filters), resumed=cursor is not None)
        parameters = {**filters, **position, "limit": limit + 1}
        rows = as_dicts(await connection.execute(statement, parameters))
    return RUN_ORDER.page(rows, limit)


async def _search_sqlite(
    connection: AsyncConnection,
    filters: dict[str, Any],
    position: dict[str, Any],
    limit: int,
    phrase: str,
) -> list[dict[str, Any]]:
    """`limit + 1` runs whose title contains the text, in the list's order: those among the
    SEARCH_WINDOW next runs, then, when they are too few, those after the window that the title
    index names. Every candidate is checked by the same LIKE as a scan, so the answer is the
    scan's; the index only saves reading the titles that cannot match."""
    resumed = bool(position)
    others = {name: value for name, value in filters.items() if name != "title"}
    floor_statement = _floor_statement(frozenset(others), resumed)
    floor = (await connection.execute(floor_statement, {**others, **position})).first()
    names = frozenset(filters)
    parameters = {**filters, **position, "limit": limit + 1}
    if floor is None:
        # Fewer runs than the window: reading them all is the cheaper way.
        statement = _list_statement("sqlite", names, resumed)
        return as_dicts(await connection.execute(statement, parameters))
    parameters.update(floor_created_at=floor.created_at, floor_id=floor.id)
    window = _list_statement("sqlite", names | {"window"}, resumed)
    rows = as_dicts(await connection.execute(window, parameters))
    if len(rows) > limit:
        return rows
    parameters.update(phrase=phrase, limit=limit + 1 - len(rows))
    indexed = _list_statement("sqlite", names | {"indexed"}, resumed)
    return rows + as_dicts(await connection.execute(indexed, parameters))


def uses_title_index(where: RunFilter) -> bool:
    """Whether SQLite's title index serves the search `where` asks for: a text of at least
    three characters once casefolded."""
    return len((where.title_contains or "").casefold()) >= TRIGRAM


def _phrase(text: str) -> str:
    """`text` as one FTS5 phrase: its trigrams, consecutive, so a title containing it."""
    return '"' + text.replace('"', '""') + '"'


async def get_run(connection: AsyncConnection, run_id: uuid.UUID) -> dict[str, Any]:
    """One run with its task spec, node counts and usage, or `NotFound`."""
    statement = _get_statement(_dialect(connection))
    return _one_run(as_dicts(await connection.execute(statement, {"run_id": run_id})), run_id)


def get_run_in(session: Session, run_id: uuid.UUID) -> dict[str, Any]:
    """`get_run` in a transaction: the run as the transaction's changes leave it."""
    statement = _get_statement(session.get_bind().dialect.name)
    return _one_run(as_dicts(session.execute(statement, {"run_id": run_id})), run_id)


def _one_run(rows: list[dict[str, Any]], run_id: uuid.UUID) -> dict[str, Any]:
    if not rows:
        raise NotFound(f"run {run_id} not found")
    return _with_task_spec(rows[0])


async def require_run(connection: AsyncConnection, run_id: uuid.UUID) -> None:
    """Raise `NotFound` unless the run exists."""
    if await connection.scalar(select(Run.id).where(Run.id == run_id)) is None:
        raise NotFound(f"run {run_id} not found")
