"""The process's event feed: one read per wake, fanned out to subscribers, with no gap and no
duplicate between what a subscriber replays from the database and what it is handed live."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from apps.core.database import (
    PING_TIMEOUT_SECONDS,
    SessionFactory,
    create_engine,
    create_session_factory,
    unit_of_work,
)
from apps.core.errors import NotFound
from apps.core.settings import Settings, load_settings
from apps.orchestrator.infra.event_wakes import CommitWake, NotifyWake, PollWake
from apps.orchestrator.model.models import Run
from apps.orchestrator.model.states import RunStatus
from apps.orchestrator.reading.event_feed import (
    Batch,
    EventFeed,
    EventStream,
    FellBehind,
    StreamedEvent,
    Subscription,
)
from tests.conftest import postgres_dsn
from tests.factories import create_event, create_run
from tests.proxies import proxy_to

WAIT = 5.0
QUIET = 0.05  # a heartbeat this short shows that a stream is waiting, not over
NEVER = 3600.0


@pytest.fixture
def engine(app: FastAPI) -> AsyncEngine:
    return app.state.engine


@contextlib.asynccontextmanager
async def running_feed(
    engine: AsyncEngine, *, poll_seconds: float = NEVER, commits: bool = True, **options: Any
) -> AsyncIterator[EventFeed]:
    """A feed woken by `engine`'s commits (unless `commits` is false) and a poll."""
    sources = [CommitWake(engine)] if commits else []
    feed = EventFeed(engine, [*sources, PollWake(poll_seconds)], **options)
    async with feed.running():
        yield feed


async def new_run(sessions: SessionFactory, **overrides: Any) -> Run:
    async with unit_of_work(sessions) as session:
        return await create_run(session, **overrides)


async def add_events(sessions: SessionFactory, run: Run, *types: str) -> list[int]:
    """Commit one event per type, in one transaction; their ids."""
    async with unit_of_work(sessions) as session:
        return [(await create_event(session, run, type=type_)).id for type_ in types]


async def finish(sessions: SessionFactory, run: Run, status: RunStatus) -> int:
    """Move the run to `status` with its `run.<status>` event, as the worker does."""
    async with unit_of_work(sessions) as session:
        await session.execute(update(Run).where(Run.id == run.id).values(status=status))
        return (await create_event(session, run, type=f"run.{status}")).id


async def take(stream: EventStream, count: int) -> list[int]:
    """The ids of the next `count` events of `stream`, heartbeats skipped."""
    ids: list[int] = []
    async with asyncio.timeout(WAIT):
        while len(ids) < count:
            batch = await anext(stream)
            assert isinstance(batch, list), batch
            ids += [streamed.id for streamed in batch]
    assert len(ids) == count, ids
    return ids


async def subscribed(feed: EventFeed, count: int) -> None:
    async with asyncio.timeout(WAIT):
        while feed.subscriber_count < count:  # noqa: ASYNC110 (the feed has no event to wait on)
            await asyncio.sleep(0.01)


async def delivered(feed: EventFeed, event_id: int) -> None:
    async with asyncio.timeout(WAIT):
        while feed.last_delivered_id < event_id:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def follow(
    feed: EventFeed, run: Run | None, after: int | None = 0, heartbeat: float = NEVER
) -> EventStream:
    run_id = run.id if run is not None else None
    return await feed.follow(run_id=run_id, after=after, heartbeat_seconds=heartbeat)


async def rest_of(
    first_batch: asyncio.Future[list[StreamedEvent]],
    stream: AsyncIterator[list[StreamedEvent]],
    count: int,
) -> list[int]:
    """The ids of `count` events: the first batch's, then the stream's next ones."""
    ids = [streamed.id for streamed in await asyncio.wait_for(first_batch, WAIT)]
    return ids + await take(stream, count - len(ids))


async def live_firehose(feed: EventFeed) -> AsyncIterator[list[StreamedEvent]]:
    """A firehose from now on, once it waits for live events (its first heartbeat says so)."""
    firehose = await follow(feed, None, after=None, heartbeat=QUIET)
    assert await asyncio.wait_for(anext(firehose), WAIT) == []
    return firehose


def first_batches(streams: Sequence[AsyncIterator[Any]]) -> list[asyncio.Task[Any]]:
    """Start waiting on each stream, which registers it with the feed."""
    return [asyncio.ensure_future(anext(stream)) for stream in streams]


async def test_each_subscriber_gets_its_runs_events_and_the_firehose_every_event(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    first, second = await new_run(sessions), await new_run(sessions)
    async with running_feed(engine) as feed:
        firehose = await live_firehose(feed)
        streams = [await follow(feed, first), await follow(feed, first), await follow(feed, second)]
        pending = first_batches(streams)
        await subscribed(feed, 4)
        ids = []
        for _ in range(3):
            ids += await add_events(sessions, first, "node.started")
            ids += await add_events(sessions, second, "node.started", "node.succeeded")

        got = [
            await rest_of(first_batch, stream, count)
            for first_batch, stream, count in zip(pending, streams, [3, 3, 6], strict=True)
        ]
        everything = await take(firehose, 9)

    assert got[0] == got[1] == ids[0::3]
    assert got[2] == sorted(ids[1::3] + ids[2::3])
    assert everything == ids


async def test_the_subscribers_of_a_run_are_handed_one_batch_to_share(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    """One object for all of them, which the HTTP edge encodes once for all of them."""
    run = await new_run(sessions)
    async with running_feed(engine) as feed:
        streams = [await follow(feed, run, heartbeat=QUIET) for _ in range(2)]
        for stream in streams:  # a heartbeat: past its replay, waiting for live events
            assert await asyncio.wait_for(anext(stream), WAIT) == []
        ids = await add_events(sessions, run, "node.started", "node.succeeded")

        first, second = [await next_events(stream) for stream in streams]

    assert first is second
    assert [streamed.id for streamed in first] == ids


async def next_events(stream: EventStream) -> Batch | FellBehind:
    """The stream's next batch of events, heartbeats skipped."""
    async with asyncio.timeout(WAIT):
        while not (batch := await anext(stream)):
            pass
    return batch


async def test_a_local_commit_wakes_the_feed_without_waiting_for_the_poll(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    run = await new_run(sessions)
    async with running_feed(engine, poll_seconds=NEVER) as feed:
        stream = await follow(feed, run)
        [pending] = first_batches([stream])
        await subscribed(feed, 1)
        ids = await add_events(sessions, run, "node.started")

        assert [e.id for e in await asyncio.wait_for(pending, WAIT)] == ids


async def test_events_another_process_writes_arrive_with_the_poll(
    engine: AsyncEngine, sessions: SessionFactory, settings: Settings
) -> None:
    run = await new_run(sessions)
    other_engine = create_engine(settings)
    try:
        async with running_feed(engine, poll_seconds=0.05, commits=False) as feed:
            stream = await follow(feed, run)
            [pending] = first_batches([stream])
            await subscribed(feed, 1)
            ids = await add_events(create_session_factory(other_engine), run, "node.started")

            assert [e.id for e in await asyncio.wait_for(pending, WAIT)] == ids
    finally:
        await other_engine.dispose()


class FailsFirst:
    """A wake source whose first watch fails as no source expects to, then polls."""

    def __init__(self) -> None:
        self.watches = 0

    async def watch(self, poke: Callable[[], None]) -> None:
        self.watches += 1
        if self.watches == 1:
            raise RuntimeError("the listening connection broke in an unforeseen way")
        await PollWake(0.05).watch(poke)


async def test_a_wake_source_that_fails_is_started_again_and_events_keep_coming(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    run = await new_run(sessions)
    source = FailsFirst()
    feed = EventFeed(engine, [source])
    async with feed.running():
        stream = await follow(feed, run)
        [pending] = first_batches([stream])
        await subscribed(feed, 1)
        ids = await add_events(sessions, run, "node.started")

        assert [e.id for e in await asyncio.wait_for(pending, WAIT)] == ids
    assert source.watches == 2


async def test_events_committed_during_the_replay_are_streamed_once_in_order(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    run = await new_run(sessions)
    old = await add_events(sessions, run, *["node.started"] * 5)
    async with running_feed(engine, replay_page=2) as feed:
        stream = await follow(feed, run)
        replayed = await take(stream, 2)
        during = await add_events(sessions, run, "node.succeeded", "node.succeeded")
        await delivered(feed, during[-1])
        rest = await take(stream, 5)
        later = await add_events(sessions, run, "run.waiting")

        assert replayed + rest + await take(stream, 1) == old + during + later


async def test_a_subscriber_that_falls_behind_is_told_to_reconnect_after_its_last_event(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    run = await new_run(sessions)
    first = await add_events(sessions, run, "run.created")
    async with running_feed(engine, buffer_limit=3) as feed:
        stream = await follow(feed, run)
        assert await take(stream, 1) == first
        burst = []
        for _ in range(4):
            burst += await add_events(sessions, run, "node.started", "node.succeeded")
        await delivered(feed, burst[-1])

        assert await anext(stream) == FellBehind(last_event_id=first[-1])
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert feed.subscriber_count == 0
        resumed = await feed.follow(run_id=run.id, after=first[-1], heartbeat_seconds=NEVER)
        assert await take(resumed, 8) == burst


async def test_a_buffer_past_its_limit_is_dropped_instead_of_growing() -> None:
    subscription = Subscription(run_id=None, after=0, limit=3, quiet_seconds=NEVER)
    events = [StreamedEvent({"id": i}) for i in range(1, 5)]

    subscription.deliver(Batch(events[:2]))
    subscription.deliver(Batch(events[2:]))
    subscription.deliver(Batch(events[:1]))

    assert subscription.overflowed
    assert await subscription.take() == []


async def test_a_run_stream_ends_after_the_final_event_of_a_finished_run(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    run = await new_run(sessions, status=RunStatus.RUNNING)
    ids = await add_events(sessions, run, "run.created", "run.started")
    async with running_feed(engine) as feed:
        stream = await follow(feed, run)
        assert await take(stream, 2) == ids
        final = await finish(sessions, run, RunStatus.SUCCEEDED)

        assert await take(stream, 1) == [final]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)


async def test_a_run_that_had_ended_streams_its_log_and_ends(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    run = await new_run(sessions, status=RunStatus.RUNNING)
    ids = await add_events(sessions, run, "run.created", "run.started")
    ids.append(await finish(sessions, run, RunStatus.CANCELLED))
    async with running_feed(engine) as feed, asyncio.timeout(WAIT):
        streamed = [e.id async for batch in await follow(feed, run) for e in batch]
        resumed = [e.id async for batch in await follow(feed, run, after=ids[0]) for e in batch]
        after_the_end = [batch async for batch in await follow(feed, run, after=ids[-1])]

    assert streamed == ids
    assert resumed == ids[1:]
    assert after_the_end == []


async def test_a_failure_the_run_was_resumed_from_does_not_end_its_stream(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    run = await new_run(sessions, status=RunStatus.RUNNING)
    ids = await add_events(sessions, run, "run.failed", "run.resumed")
    async with running_feed(engine) as feed:
        stream = await follow(feed, run, heartbeat=QUIET)

        assert await take(stream, 2) == ids
        assert await anext(stream) == []


async def test_a_run_resumed_after_its_stream_ended_streams_past_that_failure(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    run = await new_run(sessions, status=RunStatus.RUNNING)
    async with running_feed(engine) as feed:
        watching = await follow(feed, run)
        [pending] = first_batches([watching])
        await subscribed(feed, 1)
        failure = await finish(sessions, run, RunStatus.FAILED)
        assert [e.id for e in await asyncio.wait_for(pending, WAIT)] == [failure]
        with pytest.raises(StopAsyncIteration):
            await anext(watching)
        async with unit_of_work(sessions) as session:
            await session.execute(
                update(Run).where(Run.id == run.id).values(status=RunStatus.RUNNING)
            )
            resumed = (await create_event(session, run, type="run.resumed")).id

        replaying = await follow(feed, run, heartbeat=QUIET)

        assert await take(replaying, 2) == [failure, resumed]
        assert await anext(replaying) == []


async def test_an_unknown_run_cannot_be_followed(engine: AsyncEngine) -> None:
    async with running_feed(engine) as feed:
        with pytest.raises(NotFound):
            await feed.follow(run_id=uuid.uuid4(), after=None, heartbeat_seconds=NEVER)


async def test_the_firehose_starts_at_the_next_event_without_an_id_to_resume_after(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    run = await new_run(sessions)
    await add_events(sessions, run, "run.created")
    async with running_feed(engine) as feed:
        firehose = await live_firehose(feed)
        ids = await add_events(sessions, run, "run.started")

        assert await take(firehose, 1) == ids


async def test_a_quiet_stream_yields_heartbeats(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    run = await new_run(sessions)
    async with running_feed(engine) as feed:
        stream = await follow(feed, run, heartbeat=QUIET)

        assert await asyncio.wait_for(anext(stream), WAIT) == []


async def test_closing_a_stream_or_stopping_the_feed_releases_its_subscription(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    run = await new_run(sessions)
    async with running_feed(engine) as feed:
        closed, open_ = await follow(feed, run), await follow(feed, None)
        pending = first_batches([closed, open_])
        await subscribed(feed, 2)
        pending[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending[0]
        assert feed.subscriber_count == 1

    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending[1], WAIT)
    assert feed.subscriber_count == 0


async def test_events_another_process_writes_arrive_by_notify_not_by_the_poll(
    postgres_database: str,
) -> None:
    """Another process's commit (here another engine's, which this feed does not watch) reaches
    a subscriber through PostgreSQL's NOTIFY, long before the poll would look."""
    settings = load_settings(_env_file=None, database_url=postgres_database)
    own, other = create_engine(settings), create_engine(settings)
    dsn = postgres_dsn(postgres_database)
    feed = EventFeed(own, [NotifyWake(dsn), PollWake(NEVER)])
    try:
        async with feed.running():
            run = await new_run(create_session_factory(other))
            stream = await follow(feed, run, heartbeat=QUIET)
            assert await asyncio.wait_for(anext(stream), WAIT) == []
            await listening(dsn)
            (written,) = await add_events(create_session_factory(other), run, "node.started")
            async with asyncio.timeout(1.0):
                assert [streamed.id for streamed in await anext(stream)] == [written]
            await stream.aclose()
    finally:
        await own.dispose()
        await other.dispose()


async def test_a_notification_connection_gone_quiet_is_replaced(postgres_database: str) -> None:
    """The listening connection's peer stops answering without closing it (a partition): the
    feed notices at its next check and listens again on a new connection, which wakes it for
    what was written meanwhile. Before, it listened on the dead one for good."""
    settings = load_settings(_env_file=None, database_url=postgres_database)
    own, other = create_engine(settings), create_engine(settings)
    with proxy_to(postgres_database) as (proxy, through_proxy):
        quick = NotifyWake(postgres_dsn(through_proxy), retry_seconds=0.05, check_seconds=0.2)
        feed = EventFeed(own, [quick, PollWake(NEVER)])
        try:
            async with feed.running():
                run = await new_run(create_session_factory(other))
                stream = await follow(feed, run, heartbeat=QUIET)
                assert await asyncio.wait_for(anext(stream), WAIT) == []
                await listening(postgres_dsn(postgres_database))
                proxy.stall_open_connections()
                (written,) = await add_events(create_session_factory(other), run, "node.started")
                async with asyncio.timeout(WAIT + PING_TIMEOUT_SECONDS):
                    while not (batch := await anext(stream)):
                        pass
                assert [streamed.id for streamed in batch] == [written]
                await stream.aclose()
        finally:
            await own.dispose()
            await other.dispose()


async def listening(dsn: str) -> None:
    """Until a connection to the database has sent LISTEN: on a loaded machine the feed's
    connection may take longer to open than the notification is given to arrive."""
    connection = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
                ):
                    return
                await asyncio.sleep(0.01)
    finally:
        await connection.close()
