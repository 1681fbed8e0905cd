"""How an event stream is written: behind `DetachedStreams` from outside the app's stack (whose
frames and dependencies are then released), in place without it, the same bytes either way; and
at most a few stream requests in the stack at once."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.types import ASGIApp, Message

from apps.api.sse import STREAM_SETUPS, DetachedStreams, EventStreamResponse
from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.model.states import RunStatus
from tests.asgi import http_get
from tests.factories import create_event, create_run
from tests.sse import parse_sse

WAIT = 10.0


async def never_hangs_up() -> Message:
    await asyncio.Event().wait()
    raise AssertionError


def stream_app(feed_of: FastAPI, released: list[str]) -> FastAPI:
    """An app whose one route streams a run from `feed_of`'s feed, with a dependency that
    records when the app's stack has released it."""

    async def held_while_in_the_stack() -> AsyncIterator[None]:
        yield
        released.append("dependency")

    router = APIRouter()

    @router.get("/runs/{run_id}/events/stream", dependencies=[Depends(held_while_in_the_stack)])
    async def stream(run_id: uuid.UUID) -> EventStreamResponse:
        feed = feed_of.state.event_feed
        events = await feed.follow(run_id=run_id, after=None, heartbeat_seconds=WAIT)
        return EventStreamResponse(events, zone="UTC")

    app = FastAPI()
    app.include_router(router)
    return app


async def served(app: ASGIApp, path: str, released: list[str]) -> tuple[bytes, list[str]]:
    """The body `app` writes for a GET of `path`, and what had been released when the body's
    first chunk was written."""
    body: list[bytes] = []
    at_first_chunk: list[str] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            if not body:
                at_first_chunk.extend(released)
            body.append(message["body"])

    await asyncio.wait_for(app(http_get(path), never_hangs_up, send), WAIT)
    return b"".join(body), at_first_chunk


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "in place"])
async def test_a_stream_is_written_outside_the_stack_behind_detached_streams_and_alike_without(
    app: FastAPI, sessions: SessionFactory, detached: bool
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.SUCCEEDED)
        ids = [
            (await create_event(session, run, type=type_)).id
            for type_ in ("run.created", "run.started", "run.succeeded")
        ]
    released: list[str] = []
    streaming: ASGIApp = stream_app(app, released)
    if detached:
        streaming = DetachedStreams(streaming)

    body, at_first_chunk = await served(streaming, f"/runs/{run.id}/events/stream", released)

    assert parse_sse(body.decode()).ids == ids
    assert at_first_chunk == (["dependency"] if detached else [])
    assert released == ["dependency"]
    assert app.state.event_feed.subscriber_count == 0


async def inside_counted(paths: list[str]) -> tuple[int, int]:
    """The most requests for `paths` inside an app behind `DetachedStreams` at once, and how
    many were inside once they had all started."""
    inside, most, let_go = 0, 0, asyncio.Event()

    async def app(_scope: Any, _receive: Any, send: Any) -> None:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await let_go.wait()
        inside -= 1
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def ignore(_message: Message) -> None:
        return None

    middleware = DetachedStreams(app)
    requests = [
        asyncio.create_task(middleware(http_get(path), never_hangs_up, ignore)) for path in paths
    ]
    await asyncio.sleep(0.05)
    started = inside
    let_go.set()
    await asyncio.wait_for(asyncio.gather(*requests), WAIT)
    return most, started


async def test_at_most_a_few_stream_requests_are_inside_the_stack_at_once() -> None:
    paths = [f"/runs/{number}/events/stream" for number in range(STREAM_SETUPS * 3)]

    most, started = await inside_counted(paths)

    assert most == started == STREAM_SETUPS


async def test_other_requests_are_not_held_back() -> None:
    paths = [f"/runs/{number}/events" for number in range(STREAM_SETUPS * 3)]

    most, started = await inside_counted(paths)

    assert most == started == len(paths)
