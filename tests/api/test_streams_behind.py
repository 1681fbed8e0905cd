"""A stream whose client falls further behind than its buffer holds (SSE_SUBSCRIBER_BUFFER) ends
with a `reconnect` event naming the last event sent; resuming from there loses nothing."""

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from apps.core.database import SessionFactory, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.model.models import Run
from apps.orchestrator.model.states import RunStatus
from tests.api.pages import single_page
from tests.factories import create_event, create_run
from tests.sse import parse_sse

BUFFER = 5
WAIT = 10.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"sse_subscriber_buffer": BUFFER})


async def add_events(sessions: SessionFactory, run: Run, count: int) -> None:
    """`count` events in one commit: the feed reads them as one batch."""
    async with unit_of_work(sessions) as session:
        for _ in range(count):
            await create_event(session, run, type="node.started")


async def subscribed(app: FastAPI, count: int) -> None:
    async with asyncio.timeout(WAIT):
        while app.state.event_feed.subscriber_count < count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_stream_too_far_behind_is_told_to_reconnect_and_resumes_without_a_gap(
    app: FastAPI, client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.RUNNING)
        first = await create_event(session, run, type="run.created")
    path = f"/runs/{run.id}/events/stream"
    behind = asyncio.create_task(client.get(path, timeout=WAIT))
    await subscribed(app, 1)

    await add_events(sessions, run, BUFFER + 1)
    response = await asyncio.wait_for(behind, WAIT)

    told = parse_sse(response.text).messages
    assert [message.get("id") for message in told] == [str(first.id), None]
    assert told[-1]["event"] == "reconnect"
    assert told[-1]["retry"] == "1000"
    assert told[-1]["data"] == {"reason": "too far behind", "last_event_id": str(first.id)}
    async with unit_of_work(sessions) as session:
        await session.execute(
            update(Run).where(Run.id == run.id).values(status=RunStatus.SUCCEEDED)
        )
        await create_event(session, run, type="run.succeeded")

    resumed = await client.get(path, headers={"Last-Event-ID": told[-1]["data"]["last_event_id"]})

    everything = await single_page(client, "/events", run_id=str(run.id))
    assert [first.id, *parse_sse(resumed.text).ids] == [event["id"] for event in everything]
