"""An open event stream ends when the key that opened it is revoked.

A request checks its key when it comes in; a stream is one request that lasts hours. Every
`REVOCATION_CHECK_SECONDS`, one query asks which of the keys holding streams open in this process
were revoked since, whatever the number of streams, and the feed ends theirs.

While the database is out of reach the streams go on, as they were allowed, and the check fails
every time: a `FaultStreak` says it in a few lines (a warning when it starts, one every
`still_failing_log_seconds`, one when a check works again). Another error of the database (a
statement it refuses) is a warning every time; any other error stops the check, and its
supervisor reports it and starts it again.
"""

import asyncio
import contextlib
import functools
import logging
import uuid

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from apps.core.database import describe_fault, is_transient
from apps.core.fault_log import STILL_FAILING_LOG_SECONDS, FaultStreak
from apps.core.supervision import supervised
from apps.orchestrator.control import api_keys
from apps.orchestrator.reading.event_feed import EventFeed

logger = logging.getLogger(__name__)

REVOCATION_CHECK_SECONDS = 2.0
NAME = "stream-key-revocations"


async def _end_streams_of_revoked_keys(feed: EventFeed, engine: AsyncEngine) -> bool:
    """End the streams of revoked keys; whether the database was asked (streams are open)."""
    owners = {owner for owner in feed.stream_owners() if isinstance(owner, uuid.UUID)}
    if not owners:
        return False
    async with engine.connect() as connection:
        revoked = await api_keys.revoked_among(connection, owners)
    if revoked:
        logger.info("ending the event streams of %d revoked API key(s)", len(revoked))
        feed.end_streams_of(revoked)
    return True


async def _watch(feed: EventFeed, engine: AsyncEngine, every: float, faults: FaultStreak) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            if await _end_streams_of_revoked_keys(feed, engine):
                faults.over()
        except (OSError, SQLAlchemyError) as error:
            # The next check tries again; until then the streams go on, as they were allowed.
            if is_transient(error):
                faults.transient("checking again in %gs: %s", every, describe_fault(error))
            else:
                faults.unexpected()
                logger.warning("could not check the keys of open event streams: %s", error)


def streams_end_on_revocation(
    feed: EventFeed,
    engine: AsyncEngine,
    every: float = REVOCATION_CHECK_SECONDS,
    *,
    still_failing_log_seconds: float = STILL_FAILING_LOG_SECONDS,
) -> contextlib.AbstractAsyncContextManager[None]:
    """Check the keys of `feed`'s open streams every `every` seconds while the block runs."""
    faults = FaultStreak(NAME, logger, interval=still_failing_log_seconds)
    return supervised(NAME, functools.partial(_watch, feed, engine, every, faults))
