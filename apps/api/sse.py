"""Event streams as Server-Sent Events, written for a thousand open streams in one process.

`EventStreamResponse` writes an `EventStream` of the event feed: each batch as one chunk, a
batch the feed handed to many streams encoded once for all of them (per time zone), a quiet
spell as a heartbeat comment, and a stream whose client fell too far behind as one last
`event: reconnect`. It listens for the client's hang-up in a task of its own and ends the
stream then, releasing its subscription at once.

A stream lasts as long as its run, so what its request holds is held a thousand times over.
Inside the app, a response is written at the bottom of the app's stack: FastAPI's exit stacks
and request, the exception middleware's wrappers, every frame of the routing (about 20 KB a
request). Behind `DetachedStreams` a stream sends its headers there, then hands itself over and
returns, so all of that is freed, and its body is written from `DetachedStreams`, through only
the middleware outside it. Without it (an app that does not install it) a stream writes its
body where it is, as any response does.
"""

import asyncio
import json

from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from apps.core.metrics import sse_subscriber_closed, sse_subscriber_opened
from apps.orchestrator.reading.event_feed import Batch, EventStream, FellBehind, StreamedEvent
from apps.wire.schemas import Event

# How long an EventSource told to reconnect waits first: time for whatever slowed it to pass.
RECONNECT_AFTER_MS = 1_000
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# How the path of every event stream ends, under whatever prefix or alias.
STREAM_PATH_END = "/events/stream"
# Requests for a stream that `DetachedStreams` lets through the app's stack at once: a few more
# than the connections a pool lends, which is what sets them up.
STREAM_SETUPS = 8
# Where `DetachedStreams` leaves its `_Handoff` in the scope of the requests it serves.
_HANDOFF = "crew.stream_handoff"
# What FastAPI keeps in the scope for its own stack (its exit stacks, closed by then, and its
# routing context): a few KB a stream, of no use once the stack has returned.
_FASTAPI_SCOPE_KEYS = (
    "fastapi",
    "fastapi_astack",
    "fastapi_middleware_astack",
    "fastapi_inner_astack",
    "fastapi_function_astack",
)


class EventStreamResponse(Response):
    """`text/event-stream` of an `EventStream`, its events encoded for the time zone `zone`
    names (the request's), with the shape `GET /events` has. Counted in `crew_sse_subscribers`
    while it writes, and its stream is closed however it ends, a hang-up included."""

    media_type = "text/event-stream"

    def __init__(self, stream: EventStream, zone: str) -> None:
        self.stream = stream
        self.zone = zone
        self.status_code = 200
        self.background = None
        self.init_headers(STREAM_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        handoff = scope.get(_HANDOFF)
        if isinstance(handoff, _Handoff) and handoff.stream is None:
            handoff.stream = self
            return
        await self.write_body(receive, send)

    async def write_body(self, receive: Receive, send: Send) -> None:
        """Write the stream until it ends, or until the client hangs up."""
        sse_subscriber_opened()
        hang_up = asyncio.get_running_loop().create_task(_close_on_hang_up(receive, self.stream))
        try:
            async for batch in self.stream:
                chunk = _reconnect(batch) if isinstance(batch, FellBehind) else self._chunk(batch)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            hang_up.cancel()
            sse_subscriber_closed()
            await self.stream.aclose()

    def _chunk(self, batch: Batch) -> bytes:
        if not batch:
            return KEEPALIVE_COMMENT
        chunk = batch.encoded.get(self.zone)
        if chunk is None:
            chunk = b"".join(_encoded(streamed, self.zone) for streamed in batch)
            batch.encoded[self.zone] = chunk
        return chunk


class _Handoff:
    """What a stream leaves for `DetachedStreams` to write."""

    __slots__ = ("stream",)

    def __init__(self) -> None:
        self.stream: EventStreamResponse | None = None


class DetachedStreams:
    """ASGI middleware around the app's own stack: an `EventStreamResponse` under it writes its
    body from here, once the stack has returned (see the module's docstring). The handoff is an
    object in the scope, so that a layer which copies the scope still hands over.

    At most `setups` requests for a stream go through the stack at once. Each holds all of it
    while its subscription is set up (a few queries, waiting for a pooled connection), so a
    thousand clients reconnecting together would otherwise hold a thousand stacks, and the
    process keeps the memory that peak took long after they are freed.
    """

    def __init__(self, app: ASGIApp, setups: int = STREAM_SETUPS) -> None:
        self.app = app
        self._setups = asyncio.Semaphore(setups)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(STREAM_PATH_END):
            await self.app(scope, receive, send)
            return
        handoff = scope[_HANDOFF] = _Handoff()
        async with self._setups:
            try:
                await self.app(scope, receive, send)
            except BaseException:
                if handoff.stream is not None:
                    await handoff.stream.stream.aclose()
                raise
        if handoff.stream is not None:
            for key in _FASTAPI_SCOPE_KEYS:
                scope.pop(key, None)
            await handoff.stream.write_body(receive, send)


async def _close_on_hang_up(receive: Receive, stream: EventStream) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.close()


def _encoded(streamed: StreamedEvent, zone: str) -> bytes:
    chunk = streamed.encoded.get(zone)
    if chunk is None:
        row = streamed.row
        data = Event.model_validate(row).model_dump_json()
        chunk = format_sse_event(data_str=data, event=row["type"], id=str(row["id"]))
        streamed.encoded[zone] = chunk
    return chunk


def _reconnect(behind: FellBehind) -> bytes:
    last = str(behind.last_event_id)
    data = json.dumps({"reason": "too far behind", "last_event_id": last})
    return format_sse_event(data_str=data, event="reconnect", retry=RECONNECT_AFTER_MS)
