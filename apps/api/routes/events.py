"""Events: the log in id order, polled with `after` (the id of the last event seen)."""

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator

from apps.api import encoding
from apps.api.dependencies import Cursor, DriverReads, EventIdQuery, Limit
from apps.api.encoding import JSONBytes
from apps.api.responses import errors
from apps.api.routing import ProtectedRoute
from apps.core.text import NO_NUL
from apps.orchestrator.reading import event_pages
from apps.orchestrator.reading.pagination import DEFAULT_LIMIT, MAX_INT64
from apps.wire.event_types import EVENT_TYPES, event_types_named
from apps.wire.schemas import Event, Page

router = APIRouter(tags=["events"], route_class=ProtectedRoute)


After = Annotated[
    EventIdQuery, Query(ge=0, le=MAX_INT64, description="Only events with an id above this one.")
]


def _known_types(text: str | None) -> str | None:
    if text is not None:
        event_types_named(text)
    return text


_ANY_TYPE = "|".join(re.escape(name) for name in EVENT_TYPES)
Types = Annotated[
    str | None,
    Query(
        max_length=512,
        pattern=NO_NUL,
        description="Only events of these types, comma-separated: "
        + ", ".join(f"`{name}`" for name in EVENT_TYPES)
        + ". A name that is not one of them is a 422.",
        # What `_known_types` lets through, for clients and fuzzers; it says which name is wrong,
        # where a failed pattern would only quote the pattern.
        json_schema_extra={"pattern": rf"^[\s,]*(?:(?:{_ANY_TYPE})\s*(?:,[\s,]*|$))*$"},
    ),
    AfterValidator(_known_types),
]


# The page is encoded from its rows (apps/api/encoding.py); the model still documents it.
@router.get(
    "/events",
    response_model=Page[Event],
    responses=errors(404, described={404: "No run by that `run_id`."}),
)
async def list_events(
    reads: DriverReads,
    run_id: Annotated[uuid.UUID | None, Query(description="Only this run's events.")] = None,
    after: After = None,
    type: Types = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> JSONBytes:
    """Events in id order."""
    types = event_types_named(type) if type else []
    page = await event_pages.list_events(
        reads, run_id=run_id, types=types, after=after, limit=limit, cursor=cursor
    )
    return encoding.events_page(page)


@router.get(
    "/runs/{run_id}/events",
    response_model=Page[Event],
    responses=errors(404, described={404: "No such run."}),
)
async def list_run_events(
    reads: DriverReads,
    run_id: uuid.UUID,
    after: After = None,
    type: Types = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> JSONBytes:
    """A run's events in id order: `GET /events?run_id=`, at the run's own path."""
    return await list_events(
        reads, run_id=run_id, after=after, type=type, limit=limit, cursor=cursor
    )
