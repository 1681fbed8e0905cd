"""Reading the event log in id order, after a given event: the source of polling and streaming."""

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.orchestrator.models import Event
from apps.orchestrator.pagination import (
    MAX_INT64,
    Page,
    as_dicts,
    decode_cursor,
    encode_cursor,
    int_between,
    paginate,
)
from apps.orchestrator.runs import require_run

_event_id = int_between(0, MAX_INT64)

EVENT_COLUMNS = (Event.id, Event.run_id, Event.node_id, Event.type, Event.ts, Event.data)


def _event_cursor(row: dict[str, Any]) -> str:
    return encode_cursor("events", row["id"])


async def list_events(
    connection: AsyncConnection,
    *,
    run_id: uuid.UUID | None,
    types: Sequence[str],
    after: int | None,
    limit: int,
    cursor: str | None,
) -> Page[dict[str, Any]]:
    """Events in id order with an id above `after` (and the cursor's), of `types` if any."""
    statement = select(*EVENT_COLUMNS)
    if run_id is not None:
        statement = statement.where(Event.run_id == run_id)
    if types:
        statement = statement.where(Event.type.in_(types))
    floor = max(after or 0, decode_cursor(cursor, "events", _event_id)[0] if cursor else 0)
    if floor:
        statement = statement.where(Event.id > floor)
    statement = statement.order_by(Event.id).limit(limit + 1)
    rows = as_dicts(await connection.execute(statement))
    if not rows and run_id is not None:
        # Only an empty page can hide an unknown run: polling a live run costs one query.
        await require_run(connection, run_id)
    return paginate(rows, limit, _event_cursor)
