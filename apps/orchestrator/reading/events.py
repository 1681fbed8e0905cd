"""Reading the event log in id order, after a given event: the source of polling and streaming."""

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.core.errors import NotFound
from apps.orchestrator.model.models import EVENTS, Event, Run
from apps.orchestrator.model.states import RUN_TERMINAL
from apps.orchestrator.model.transitions import RUN_EVENTS
from apps.orchestrator.reading.pagination import Keyset, as_dicts

# In id order, which is commit order: what polling and streams rely on.
EVENT_ORDER = Keyset("events", EVENTS.c.id)

EVENT_COLUMNS = (Event.id, Event.run_id, Event.node_id, Event.type, Event.ts, Event.data)
# The events that may close a run's log: the one matching the run's final status does.
FINAL_EVENT_TYPES = frozenset(RUN_EVENTS[status] for status in RUN_TERMINAL)


async def events_after(
    connection: AsyncConnection, after: int, limit: int, run_id: uuid.UUID | None = None
) -> list[dict[str, Any]]:
    """Up to `limit` events with an id above `after`, in id order; only `run_id`'s when given."""
    statement = select(*EVENT_COLUMNS).where(Event.id > after)
    if run_id is not None:
        statement = statement.where(Event.run_id == run_id)
    return as_dicts(await connection.execute(statement.order_by(Event.id).limit(limit)))


async def event_ids_after(
    connection: AsyncConnection, after: int, limit: int, run_id: uuid.UUID | None = None
) -> list[int]:
    """The ids `events_after` would return: what a replay needs when it has the rows at hand."""
    statement = select(Event.id).where(Event.id > after)
    if run_id is not None:
        statement = statement.where(Event.run_id == run_id)
    return list(await connection.scalars(statement.order_by(Event.id).limit(limit)))


async def events_by_id(connection: AsyncConnection, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The events with these ids, in id order."""
    statement = select(*EVENT_COLUMNS).where(Event.id.in_(ids)).order_by(Event.id)
    return as_dicts(await connection.execute(statement))


async def latest_event_id(connection: AsyncConnection) -> int:
    """The highest event id written so far, 0 when there is none."""
    return await connection.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0


async def final_event_id(connection: AsyncConnection, run_id: uuid.UUID) -> int | None:
    """The id of the event that closed the run's log, or None while the run may go on.

    That is the latest `run.<status>` event when the run is in that final status: a run that
    failed and was resumed has a `run.failed` event behind it but is not over.
    """
    status = await connection.scalar(select(Run.status).where(Run.id == run_id))
    if status is None:
        raise NotFound(f"run {run_id} not found")
    if status not in RUN_TERMINAL:
        return None
    closing = select(func.max(Event.id)).where(
        Event.run_id == run_id, Event.type == RUN_EVENTS[status]
    )
    return await connection.scalar(closing)
