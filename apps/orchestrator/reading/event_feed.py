"""Live events: one feed per process reads new events once and fans them out to its subscribers.

The feed knows the highest event id it has delivered. When woken, it reads what came after it
from the database in one query (in id order), and hands each subscriber the events it follows:
one run's, or every run's for the operator's firehose. Subscribers never poll the database for
live events; they wait on their buffer.

A stream has no gap and no duplicate because event ids are commit-ordered (an event that commits
later has a higher id). A subscriber registers first, so the feed buffers what arrives from then
on; it then replays from the database what came after its last event id, and only then drains its
buffer, skipping the ids it already sent. A buffer is bounded: a subscriber that falls further
behind than it holds drops it and its stream ends with `FellBehind`, which tells the client to
reconnect after the last event it got (SSE's Last-Event-ID): a slow client never grows the
process's memory, nor makes it read the database for it while it is connected.

What wakes the feed is pluggable (`event_wakes.WakeSource`): by default, commits made through
this process's engine and a slow poll for the events other processes write.
"""

import asyncio
import contextlib
import functools
import uuid
from collections import defaultdict
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Collection,
    Hashable,
    Iterable,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apps.core.database import Database
from apps.core.errors import NotFound
from apps.core.supervision import start_supervised
from apps.orchestrator.infra.event_wakes import (
    CommitWake,
    NotifyWake,
    PollWake,
    TransactionsWake,
    WakeSource,
)
from apps.orchestrator.reading import events

FEED_PAGE = 1_000
REPLAY_PAGE = 500
SUBSCRIBER_BUFFER = 1_000
RECENT_EVENTS = 5_000
# The least time between two reads of new events: the first event after a quiet spell is handed
# out at once, those that follow within this are handed out together.
FAN_OUT_SECONDS = 0.03
# The longest the feed's reader waits to try again after failing (the database out of reach): a
# stream lags the database that long at most once it answers, less than the supervisor's default
# (a client that reconnects meanwhile waits for the reader too).
FEED_MAX_RESTART_SECONDS = 2.0


@dataclass(slots=True, eq=False)
class StreamedEvent:
    """One event as read from the database, shared by every subscriber it is handed to."""

    row: dict[str, Any]
    # Whether this event closes its run's log, as of its latest read from the database.
    ends_run: bool = False
    # What the HTTP edge encoded it to, per time zone: hundreds of subscribers encode it once.
    encoded: dict[str, bytes] = field(default_factory=dict)

    @property
    def id(self) -> int:
        event_id: int = self.row["id"]
        return event_id


class Batch(list[StreamedEvent]):
    """Events in id order, handed out together: what one read of the feed holds for a run (or
    for the firehose), the same object for every subscriber it is handed to, so that the HTTP
    edge writes it as one chunk encoded once (`encoded`, per time zone) however many streams
    carry it. Empty, it is a heartbeat."""

    __slots__ = ("encoded",)

    def __init__(self, events: Iterable[StreamedEvent] = ()) -> None:
        super().__init__(events)
        self.encoded: dict[str, bytes] = {}

    @property
    def ends_run(self) -> bool:
        """Whether it ends with the event that closes its run's log."""
        return bool(self) and self[-1].ends_run


@dataclass(frozen=True, slots=True)
class FellBehind:
    """The last thing a stream yields when its subscriber fell too far behind: the stream ends,
    and the client resumes on a new one after `last_event_id`, the last event it was sent."""

    last_event_id: int


class EventStream:
    """What `EventFeed.follow` returns: an async iterator of `Batch`es in id order (an empty one
    when it has been quiet) and, last, `FellBehind` when its subscriber fell too far behind.

    `close` ends it from outside, as the end of its run does: what a client's hang-up calls
    while the stream waits for events in another task.
    """

    __slots__ = ("_batches", "_subscription")

    def __init__(
        self,
        batches: AsyncGenerator[Batch | FellBehind, None],
        subscription: "Subscription",
    ) -> None:
        self._batches = batches
        self._subscription = subscription

    def __aiter__(self) -> "EventStream":
        return self

    def __anext__(self) -> Awaitable[Batch | FellBehind]:
        return self._batches.__anext__()

    def close(self) -> None:
        """End the stream: an iteration waiting for events stops."""
        self._subscription.close()

    async def aclose(self) -> None:
        """Release the subscription at once (the stream must not be iterating elsewhere)."""
        await self._batches.aclose()


class Subscription:
    """The batches the feed handed one subscriber since it last took them, bounded in events."""

    __slots__ = (
        "_last_taken",
        "_limit",
        "_loop",
        "_pending",
        "_pending_events",
        "_quiet",
        "_quiet_seconds",
        "_quiet_timer",
        "_waiter",
        "closed",
        "last_sent",
        "overflowed",
        "owner",
        "run_id",
    )

    def __init__(
        self,
        run_id: uuid.UUID | None,
        after: int,
        limit: int,
        quiet_seconds: float,
        owner: Hashable = None,
    ) -> None:
        self.run_id = run_id
        self.owner = owner
        self.last_sent = after
        self.overflowed = False
        self.closed = False
        self._limit = limit
        self._pending: list[Batch] = []
        self._pending_events = 0
        # One future per wait rather than an asyncio.Event: a thousand subscribers hold a
        # thousand of these, and are woken once per batch.
        self._waiter: asyncio.Future[None] | None = None
        self._quiet = False
        self._quiet_seconds = quiet_seconds
        self._loop = asyncio.get_running_loop()
        self._last_taken = self._loop.time()
        self._quiet_timer: asyncio.TimerHandle | None = None

    def deliver(self, batch: Batch) -> None:
        """Buffer `batch`; past the limit, drop the buffer and mark the subscriber as behind,
        which ends its stream."""
        if self.overflowed:
            return
        self._pending_events += len(batch)
        if self._pending_events > self._limit:
            self._pending, self._pending_events, self.overflowed = [], 0, True
        else:
            self._pending.append(batch)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()

    async def take(self) -> Batch:
        """What was buffered, waiting for something; an empty batch after `quiet_seconds` with
        nothing, or once the subscription is closed or overflowed."""
        if not (self._pending or self._quiet or self.overflowed or self.closed):
            if self._quiet_timer is None:
                self._arm_quiet_timer()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._quiet = False
        self._last_taken = self._loop.time()
        pending, self._pending, self._pending_events = self._pending, [], 0
        if len(pending) == 1:
            return pending[0]
        return Batch(streamed for batch in pending for streamed in batch)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _arm_quiet_timer(self) -> None:
        self._quiet_timer = self._loop.call_at(
            self._last_taken + self._quiet_seconds, self._quiet_timer_fired
        )

    def _quiet_timer_fired(self) -> None:
        # One timer per quiet period rather than one per wait: a busy stream would otherwise
        # arm and cancel a timer for every write, which costs more than the write.
        if self._loop.time() >= self._last_taken + self._quiet_seconds:
            self._quiet_timer = None
            self._quiet = True
            self._wake()
        else:
            self._arm_quiet_timer()


class EventFeed:
    """The process's one reader of new events; see the module's docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        wake_sources: Sequence[WakeSource],
        *,
        buffer_limit: int = SUBSCRIBER_BUFFER,
        replay_page: int = REPLAY_PAGE,
    ) -> None:
        self._engine = engine
        self._wake_sources = wake_sources
        self._buffer_limit = buffer_limit
        self._replay_page = replay_page
        self._last_delivered = 0
        # Set when the feed skipped a read for want of subscribers: its position is stale.
        self._stale = True
        self._reading = asyncio.Lock()
        self._wake = asyncio.Event()
        self._by_run: dict[uuid.UUID, set[Subscription]] = defaultdict(set)
        self._firehose: set[Subscription] = set()
        self._recent: dict[int, StreamedEvent] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False

    @property
    def last_delivered_id(self) -> int:
        """The highest event id the feed has read and handed out."""
        return self._last_delivered

    @property
    def subscriber_count(self) -> int:
        return len(self._firehose) + sum(len(group) for group in self._by_run.values())

    def stream_owners(self) -> set[Hashable]:
        """Who opened the streams open now (what `follow` was given as `owner`), None aside."""
        subscriptions = [*self._firehose, *self._all_run_subscriptions()]
        return {s.owner for s in subscriptions if s.owner is not None}

    def end_streams_of(self, owners: Collection[Hashable]) -> None:
        """End the streams opened by any of `owners`, as a stream ends after its run's last
        event: their subscribers' iterations stop."""
        for subscription in [*self._firehose, *self._all_run_subscriptions()]:
            if subscription.owner in owners:
                subscription.close()

    def end_all_streams(self) -> None:
        """End every stream, and those that start from now on at once: the process is stopping,
        and its clients had better reconnect (with their Last-Event-ID) to another."""
        self._stopping = True
        for subscription in [*self._firehose, *self._all_run_subscriptions()]:
            subscription.close()

    def poke(self) -> None:
        """New events may be in the database; pokes that come while a read runs coalesce."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["EventFeed"]:
        """Read and fan out while the block runs; close every subscription when it ends."""
        # After an outage every live stream waits for the reader's next try.
        self._tasks = [
            start_supervised("event feed", self._pump, max_delay=FEED_MAX_RESTART_SECONDS)
        ]
        self._tasks += [
            start_supervised(
                f"event feed wake source {type(source).__name__}",
                functools.partial(source.watch, self.poke),
            )
            for source in self._wake_sources
        ]
        try:
            yield self
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.end_all_streams()

    async def follow(
        self,
        *,
        run_id: uuid.UUID | None,
        after: int | None,
        heartbeat_seconds: float,
        owner: Hashable = None,
    ) -> EventStream:
        """The events after `after` (one run's, or every run's), then the live ones as they come.

        Raises `NotFound` for an unknown run before anything is streamed. Without `after`, a
        run's stream starts at its first event and the firehose at the next event written. The
        stream yields batches in id order, an empty batch when `heartbeat_seconds` pass without
        an event, and ends after the run's final event (at once if the run ended by `after`).
        An `after` past the newest event is taken as the newest. `owner` names who opened the
        stream, for `end_streams_of`.
        """
        over = False
        async with self._engine.connect() as connection:
            if after is not None:
                # An id past the newest event names nothing the client saw: waiting for the
                # events above it would skip the rest of the run, and its end.
                after = min(after, await events.latest_event_id(connection))
            if run_id is not None:
                final_id = await events.final_event_id(connection, run_id)
                over = final_id is not None and final_id <= (after or 0)
        subscription = Subscription(
            run_id, after or 0, self._buffer_limit, heartbeat_seconds, owner
        )
        batches = self._stream(subscription, over=over, from_now=after is None)
        return EventStream(batches, subscription)

    async def _stream(
        self, subscription: Subscription, *, over: bool, from_now: bool
    ) -> AsyncGenerator[Batch | FellBehind, None]:
        """Replayed pages, then the batches the feed hands out, each less what was sent already,
        until the run's final event, a close, or an overflow of the subscriber's buffer."""
        if over:
            return
        await self._register(subscription)
        if self._stopping:
            subscription.close()
        try:
            if from_now and subscription.run_id is None:
                subscription.last_sent = await self._latest_event_id()
            after, more = subscription.last_sent, True
            while more:
                page, after, more = await self._replay(subscription.run_id, after)
                if page:
                    yield page
                    subscription.last_sent = page[-1].id
                    if page.ends_run and subscription.run_id is not None:
                        return
            while True:
                batch = await subscription.take()
                if subscription.overflowed or subscription.closed:
                    break
                fresh = _after(batch, subscription.last_sent)
                if fresh or not batch:
                    yield fresh
                if fresh:
                    subscription.last_sent = fresh[-1].id
                    if fresh.ends_run and subscription.run_id is not None:
                        return
            if subscription.overflowed and not subscription.closed:
                yield FellBehind(subscription.last_sent)
        finally:
            self._unregister(subscription)

    async def _replay(self, run_id: uuid.UUID | None, after: int) -> tuple[Batch, int, bool]:
        """The page after `after` (through the run's final event), the id it ends at, and whether
        more may follow.

        The database says which events there are; their rows come from the events the feed
        holds when it has them, which spares parsing the rows again for each of hundreds of
        subscribers that (re)connect to a live run at once.
        """
        async with self._engine.connect() as connection:
            ids = await events.event_ids_after(connection, after, self._replay_page, run_id)
            held = {
                event_id: self._recent[event_id] for event_id in ids if event_id in self._recent
            }
            missing = [event_id for event_id in ids if event_id not in held]
            if missing:
                rows = await events.events_by_id(connection, missing)
                held |= {streamed.id: streamed for streamed in self._shared(rows)}
            page = [held[event_id] for event_id in ids if event_id in held]
            page = await _with_final_marks(connection, page)
        if run_id is not None:
            page = _through_final(page)
        return Batch(page), ids[-1] if ids else after, len(ids) == self._replay_page

    async def _register(self, subscription: Subscription) -> None:
        if self._stale:
            # Nobody was listening, so the feed stopped reading: start it from the newest event
            # before this subscriber counts. What commits later has a higher id and is read.
            async with self._reading:
                if self._stale:
                    self._last_delivered = await self._latest_event_id()
                    self._stale = False
        if subscription.run_id is None:
            self._firehose.add(subscription)
        else:
            self._by_run[subscription.run_id].add(subscription)

    async def _latest_event_id(self) -> int:
        async with self._engine.connect() as connection:
            return await events.latest_event_id(connection)

    def _unregister(self, subscription: Subscription) -> None:
        subscription.close()
        if subscription.run_id is None:
            self._firehose.discard(subscription)
            return
        followers = self._by_run[subscription.run_id]
        followers.discard(subscription)
        if not followers:
            del self._by_run[subscription.run_id]

    def _all_run_subscriptions(self) -> list[Subscription]:
        return [subscription for group in self._by_run.values() for subscription in group]

    async def _pump(self) -> None:
        """Read and fan out on each wake, at most once every FAN_OUT_SECONDS. A failed read
        stops it, and its supervisor starts it again; the next wake (at worst the poll) reads
        again from the same event."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not (self._firehose or self._by_run):
                self._stale = True
                continue
            read_at = loop.time()
            async with self._reading:
                await self._read_new_events()
            # The commits of the next moments come in one batch: every subscriber wakes and
            # writes once for them, which is what hundreds of subscribers cost.
            await asyncio.sleep(read_at + FAN_OUT_SECONDS - loop.time())

    async def _read_new_events(self) -> None:
        async with self._engine.connect() as connection:
            while True:
                rows = await events.events_after(connection, self._last_delivered, FEED_PAGE)
                if not rows:
                    return
                batch = await _with_final_marks(connection, self._shared(rows))
                self._last_delivered = batch[-1].id
                self._fan_out(batch)
                if len(rows) < FEED_PAGE:
                    return

    def _shared(self, rows: list[dict[str, Any]]) -> list[StreamedEvent]:
        """`rows` as events shared by every subscriber that reads them lately, live or by
        replay, so that each is encoded once however many streams carry it."""
        batch = []
        for row in rows:
            streamed = self._recent.get(row["id"])
            if streamed is None:
                streamed = self._recent[row["id"]] = StreamedEvent(row)
            batch.append(streamed)
        while len(self._recent) > RECENT_EVENTS:
            del self._recent[next(iter(self._recent))]
        return batch

    def _fan_out(self, read: list[StreamedEvent]) -> None:
        """One batch per run (and one of everything for the firehose), the same object for
        each of its subscribers."""
        if self._firehose:
            everything = Batch(read)
            for subscription in self._firehose:
                subscription.deliver(everything)
        if not self._by_run:
            return
        by_run: dict[uuid.UUID, list[StreamedEvent]] = defaultdict(list)
        for streamed in read:
            by_run[streamed.row["run_id"]].append(streamed)
        for run_id, run_events in by_run.items():
            followers = self._by_run.get(run_id)
            if followers:
                batch = Batch(_through_final(run_events))
                for subscription in followers:
                    subscription.deliver(batch)


def build_event_feed(
    database: Database, *, poll_seconds: float, buffer_limit: int = SUBSCRIBER_BUFFER
) -> EventFeed:
    """The feed of an API process: woken by its own commits, on PostgreSQL by every process's
    (NOTIFY), and every `poll_seconds` in case a wake was lost."""
    engine = database.engine
    sources: list[WakeSource] = [
        CommitWake(engine),
        TransactionsWake(database.transactions),
        PollWake(poll_seconds),
    ]
    if engine.dialect.name == "postgresql":
        url = engine.url.set(drivername="postgresql")
        sources.append(NotifyWake(url.render_as_string(hide_password=False)))
    return EventFeed(engine, sources, buffer_limit=buffer_limit)


async def _with_final_marks(
    connection: AsyncConnection, batch: list[StreamedEvent]
) -> list[StreamedEvent]:
    """`batch`, with the events that close their run's log marked so: one query per run-level
    final event, of which a run has one or a few."""
    for streamed in batch:
        if streamed.row["type"] in events.FINAL_EVENT_TYPES:
            with contextlib.suppress(NotFound):  # a run deleted since: nobody follows it
                final_id = await events.final_event_id(connection, streamed.row["run_id"])
                streamed.ends_run = final_id == streamed.id
    return batch


def _through_final(run_events: list[StreamedEvent]) -> list[StreamedEvent]:
    """One run's events up to its final event, if they hold it: where its stream ends."""
    for index, streamed in enumerate(run_events):
        if streamed.ends_run:
            return run_events[: index + 1]
    return run_events


def _after(batch: Batch, last_sent: int) -> Batch:
    """`batch` less the events up to `last_sent`: the shared batch itself, unless the replay
    that came before it overlapped it."""
    if not batch or batch[0].id > last_sent:
        return batch
    return Batch(streamed for streamed in batch if streamed.id > last_sent)
