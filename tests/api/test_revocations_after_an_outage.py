"""The check of the keys of open event streams through an outage of PostgreSQL: the streams go
on, and the check says it failed in a few lines, not one a check.

The outage is a proxy of the test's own that resets every connection and refuses new ones, as a
restarting server or a failover does."""

import asyncio
import contextlib
import logging
import time
import uuid

import pytest

from apps.api import revocations
from apps.api.revocations import streams_end_on_revocation
from apps.core.database import create_engine, create_session_factory, unit_of_work
from apps.core.settings import load_settings
from apps.orchestrator.control import api_keys
from apps.orchestrator.infra.event_wakes import PollWake
from apps.orchestrator.model.models import KeyRole
from apps.orchestrator.reading.event_feed import EventFeed
from tests.proxies import resetting_proxy_to
from tests.waiting import until

WAIT = 5.0
NEVER = 3600.0
QUIET = 0.05  # a heartbeat this short shows that a stream is waiting, not over
OUTAGE_SECONDS = 1.25
STILL_FAILING_LOG_SECONDS = 0.5


async def _follow(feed: EventFeed, owner: uuid.UUID, opened: asyncio.Event) -> None:
    """Follow every run's events as `owner` until cancelled; `opened` once the stream has
    read what it replays from the database, and waits for the feed."""
    stream = await feed.follow(run_id=None, after=None, heartbeat_seconds=QUIET, owner=owner)
    async for _batch in stream:
        opened.set()
    raise AssertionError("the stream ended")


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == revocations.__name__]


async def test_an_outage_is_a_few_warnings_and_a_line_when_the_check_works_again(
    postgres_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=revocations.__name__)
    with resetting_proxy_to(postgres_database) as (proxy, through_proxy):
        engine = create_engine(load_settings(_env_file=None, database_url=through_proxy))
        async with unit_of_work(create_session_factory(engine)) as session:
            watcher = await api_keys.create_key(session, "watcher", KeyRole.VIEWER)
        feed = EventFeed(engine, [PollWake(NEVER)])
        try:
            async with feed.running():
                opened = asyncio.Event()
                streaming = asyncio.create_task(_follow(feed, watcher.row.id, opened))
                await asyncio.wait_for(opened.wait(), WAIT)
                async with streams_end_on_revocation(
                    feed, engine, 0.02, still_failing_log_seconds=STILL_FAILING_LOG_SECONDS
                ):
                    cut_at = time.monotonic()
                    proxy.cut()
                    await asyncio.sleep(OUTAGE_SECONDS)
                    proxy.mend()
                    await until(
                        lambda: any(r.levelno == logging.INFO for r in _lines(caplog)), WAIT
                    )
                    lasted = time.monotonic() - cut_at
                # The stream went on through the outage, as its key allowed.
                assert not streaming.done()
                assert feed.subscriber_count == 1
                streaming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await streaming
        finally:
            await engine.dispose()

    lines = _lines(caplog)
    warnings = [r.getMessage() for r in lines if r.levelno == logging.WARNING]
    # A check every 0.02 s for 1.25 s: the first failure, then one every half second.
    # (The outage lasts longer than the sleep on a loaded machine: bounded by what it lasted.)
    assert 2 <= len(warnings) <= 1 + lasted // STILL_FAILING_LOG_SECONDS, (lasted, warnings)
    assert warnings[0].startswith("stream-key-revocations failed, checking again in 0.02s: ")
    assert all(
        message.startswith("stream-key-revocations still failing (") for message in warnings[1:]
    )
    (recovered,) = [r.getMessage() for r in lines if r.levelno == logging.INFO]
    assert recovered.startswith("stream-key-revocations is running again, after ")
    failures = int(recovered.split("after ")[1].split(" ")[0])
    assert failures > len(warnings)
    assert len([r for r in lines if r.levelno == logging.DEBUG]) == failures - len(warnings)
