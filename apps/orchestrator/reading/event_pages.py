"""Pages of the event log, as polling reads them: by the driver itself (`driver_calls`), each
event's document as the JSON text it is stored as.

Polling a run's events is, with the runs list, what the API serves most. Through SQLAlchemy a
page cost a statement built per request and its cache key, every row's values processed and
each document decoded (to be encoded again for the response), and on SQLite a checkout of the
engine's pool and a hand-off to aiosqlite's thread per step of the cursor. Here the statement
is compiled once for each shape of the filters, and the page is one call of the driver: on a
SQLite file on SQLite's readers (`core.read_connections`), else on a connection of the read
engine.

A page of one run's events also tells an unknown run from one with no event to show, in the
same statement: a poller that has every event (`after` its last) gets an empty page on most
requests, and a second statement to look the run up cost as much again.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    CompoundSelect,
    Dialect,
    Select,
    Text,
    bindparam,
    cast,
    exists,
    null,
    select,
    union_all,
)

from apps.core.errors import NotFound
from apps.core.read_connections import DriverReads
from apps.orchestrator.model.models import Event, Run
from apps.orchestrator.reading.driver_calls import DriverStatement, reading
from apps.orchestrator.reading.events import EVENT_ORDER
from apps.orchestrator.reading.pagination import Page

# `data` as its JSON text: a page written out with it as it is spends nothing decoding each
# event's document and encoding it again.
_COLUMNS = (
    Event.id,
    Event.run_id,
    Event.node_id,
    Event.type,
    Event.ts,
    cast(Event.data, Text).label("data"),
)
_KEYS = tuple(column.key for column in _COLUMNS)


def _type_slots(count: int) -> int:
    """The number of types a statement takes for `count` types: the next power of two (the
    last type repeated to fill it), so that a page has one of nine shapes of type filter,
    not one per count a request can send."""
    return 1 << (count - 1).bit_length() if count else 0


@lru_cache(maxsize=128)
def _page_query(
    dialect: Dialect, by_run: bool, type_slots: int, after: bool, resumed: bool
) -> DriverStatement:
    """The page's statement: of one run's events or all, of `type_slots` types or any, above
    an event id or not, after a cursor or from the start."""
    statement = select(*_COLUMNS)
    if by_run:
        statement = statement.where(Event.run_id == bindparam("run_id"))
    if type_slots:
        kinds: list[BindParameter[str]] = [bindparam(f"type_{i}") for i in range(type_slots)]
        statement = statement.where(Event.type.in_(kinds))
    if after:
        statement = statement.where(Event.id > bindparam("after"))
    if resumed:
        statement = statement.where(EVENT_ORDER.resume_after())
    if by_run:
        return DriverStatement.of(_page_or_unknown_run(statement, dialect), dialect)
    return DriverStatement.of(_page_of(statement), dialect)


def _page_of(events: Select[*tuple[Any, ...]]) -> Select[*tuple[Any, ...]]:
    """The first `limit` rows of `events` in id order."""
    return events.order_by(*EVENT_ORDER.order_by()).limit(bindparam("limit"))


def _page_or_unknown_run(events: Select[*tuple[Any, ...]], dialect: Dialect) -> CompoundSelect[Any]:
    """The page of one run's `events`, or a row of nulls if the run does not exist (it then
    has no event): a known run's empty page is no row at all.

    SQLite merges the union in id order, reading the events from their index as the page
    alone would and stopping at the limit; a page limited first would be sorted again. On
    PostgreSQL the page must be limited first: of the union it would read every event of the
    run and sort them all."""
    unknown = select(*(null().label(key) for key in _KEYS)).where(
        ~exists().where(Run.id == bindparam("run_id"))
    )
    if dialect.name == "postgresql":
        events = select(*_page_of(events).subquery("page").c)
    union: CompoundSelect[Any] = union_all(events, unknown)
    return union.order_by(*EVENT_ORDER.order_by(union)).limit(bindparam("limit"))


def _row(row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(_KEYS, row, strict=True))


def _sqlite_row(row: Sequence[Any]) -> dict[str, Any]:
    """An event of SQLite's row, whose ids are hex and whose time is naive UTC text."""
    event = _row(row)
    event["ts"] = datetime.fromisoformat(event["ts"] + "+00:00")
    return event


async def list_events(
    reads: DriverReads,
    *,
    run_id: uuid.UUID | None,
    types: Sequence[str],
    after: int | None,
    limit: int,
    cursor: str | None,
) -> Page[dict[str, Any]]:
    """Events in id order with an id above `after` (and the cursor's), of `types` if any: each
    row's ids as the driver gives them (a UUID or its hex), `ts` a datetime in UTC and `data`
    its document's JSON text. `NotFound` for a `run_id` no run has."""
    dialect = reads.engine.dialect
    kinds = list(dict.fromkeys(types))
    slots = _type_slots(len(kinds))
    kinds += kinds[-1:] * (slots - len(kinds))
    statement = _page_query(dialect, run_id is not None, slots, bool(after), cursor is not None)
    given: dict[str, Any] = {f"type_{index}": kind for index, kind in enumerate(kinds)}
    given |= {"run_id": run_id, "after": after, "limit": limit + 1}
    if cursor is not None:
        given |= EVENT_ORDER.cursor_parameters(cursor)
    async with reading(reads) as read:
        rows = await read(statement, given)
    # A row without an id is `_page_or_unknown_run`'s sign that no run has that id.
    if run_id is not None and any(row[0] is None for row in rows):
        raise NotFound(f"run {run_id} not found")
    event = _sqlite_row if dialect.name == "sqlite" else _row
    return EVENT_ORDER.page([event(row) for row in rows], limit)
