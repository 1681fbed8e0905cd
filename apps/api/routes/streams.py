"""Live events as Server-Sent Events, for one run or every run.

Each event is `id:` its id, `event:` its type and `data:` the event as JSON, in exactly the shape
`GET /events` returns. A reconnect with `Last-Event-ID` (or `?after=`) resumes after that event
with no gap and no duplicate. The process's one `EventFeed` wakes the streams; nothing here polls.

A client that reads too slowly to keep up (more than the feed's buffer of events behind) gets
one last `event: reconnect`, whose data names the last event it was sent, and the stream ends; an
EventSource reconnects by itself with that id as its Last-Event-ID (the `reconnect` event has no
`id:` line, so it leaves the id alone) after the `retry:` it carries.
"""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request

from apps.api.auth import Caller, Principal
from apps.api.dependencies import EVENT_ID, EventIdQuery
from apps.api.responses import errors
from apps.api.routing import ProtectedRoute
from apps.api.sse import EventStreamResponse
from apps.api.timezone import request_zone
from apps.core.errors import BadRequest
from apps.orchestrator.reading.event_feed import EventFeed
from apps.orchestrator.reading.pagination import MAX_INT64

router = APIRouter(tags=["events"], route_class=ProtectedRoute)

_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    **errors(404, described={404: "No run by that id."}),
    200: {
        "description": "Server-Sent Events; comment lines (`: ping`) are heartbeats.",
        "content": {
            "text/event-stream": {
                "itemSchema": {
                    "type": "object",
                    "required": ["id", "event", "data"],
                    "properties": {
                        "id": {
                            "type": "string",
                            "description": "Event id; send it back as Last-Event-ID to resume.",
                        },
                        "event": {"type": "string", "description": "Event type."},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": "#/components/schemas/Event"},
                        },
                    },
                }
            }
        },
    },
}


def _digits_at_most(highest: str) -> str:
    """A regular expression of the digit strings (leading zeros allowed) of at most
    `len(highest)` digits whose value is at most `highest`: what JSON Schema can say of a number
    sent as text."""
    shorter = f"[0-9]{{0,{len(highest) - 1}}}"
    lower = [
        f"{highest[:index]}[0-{int(digit) - 1}][0-9]{{{len(highest) - index - 1}}}"
        for index, digit in enumerate(highest)
        if digit != "0"
    ]
    return "^(" + "|".join([shorter, *lower, highest]) + ")$"


_EVENT_ID_PATTERN = _digits_at_most(str(MAX_INT64))


def _event_feed(request: Request) -> EventFeed:
    feed: EventFeed = request.app.state.event_feed
    return feed


Feed = Annotated[EventFeed, Depends(_event_feed)]
After = Annotated[
    EventIdQuery,
    Query(ge=0, le=MAX_INT64, description="Resume after this event id (as Last-Event-ID does)."),
]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="Id of the last event received; what a reconnecting EventSource sends. "
        "Empty: none.",
        json_schema_extra={"pattern": _EVENT_ID_PATTERN},
    ),
]


def _resume_after(after: int | None, last_event_id: str | None) -> int | None:
    """The event id to resume after: the later of `?after=` and `Last-Event-ID`, if either.

    An empty Last-Event-ID is no id: what an `id:` line with no value tells a client to send.
    """
    if not last_event_id:
        return after
    if not EVENT_ID.fullmatch(last_event_id) or int(last_event_id) > MAX_INT64:
        raise BadRequest(f"Last-Event-ID {last_event_id!r} is not an event id")
    return max(int(last_event_id), after or 0)


async def _respond(
    request: Request,
    caller: Principal,
    feed: EventFeed,
    run_id: uuid.UUID | None,
    after: int | None,
) -> EventStreamResponse:
    heartbeat = request.app.state.settings.sse_heartbeat_seconds
    # Owned by the caller's key: the stream ends when the key is revoked (`revocations`).
    stream = await feed.follow(
        run_id=run_id, after=after, heartbeat_seconds=heartbeat, owner=caller.key_id
    )
    return EventStreamResponse(stream, zone=str(request_zone()))


@router.get(
    "/events/stream",
    response_class=EventStreamResponse,
    status_code=200,
    responses=_STREAM_RESPONSES,
)
async def stream_events(
    request: Request,
    caller: Caller,
    feed: Feed,
    run_id: Annotated[uuid.UUID | None, Query(description="Only this run's events.")] = None,
    after: After = None,
    last_event_id: LastEventId = None,
) -> EventStreamResponse:
    """Events as Server-Sent Events, live.

    With `run_id`, the run's events from its first (or after `Last-Event-ID` / `after`), ending
    after the run's final event. Without, every run's events from now on (or after the id given),
    never ending: the operator's firehose. Either ends within seconds of the revocation of the
    key that opened it.
    """
    return await _respond(request, caller, feed, run_id, _resume_after(after, last_event_id))


@router.get(
    "/runs/{run_id}/events/stream",
    response_class=EventStreamResponse,
    status_code=200,
    responses=_STREAM_RESPONSES,
)
async def stream_run_events(
    request: Request,
    caller: Caller,
    feed: Feed,
    run_id: uuid.UUID,
    after: After = None,
    last_event_id: LastEventId = None,
) -> EventStreamResponse:
    """One run's events as Server-Sent Events, live, ending after the run's final event (or
    within seconds of the revocation of the key that opened it)."""
    return await _respond(request, caller, feed, run_id, _resume_after(after, last_event_id))
