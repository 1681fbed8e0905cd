"""An open event stream ends when the key that opened it is revoked.

A request checks its key when it comes in; a stream is one request that lasts hours. Every
`REVOCATION_CHECK_SECONDS`, one query asks which of the keys holding streams open in this process
were revoked since, whatever the number of streams, and the feed ends theirs.
"""

import asyncio
import contextlib
import functools
import logging
import uuid

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from apps.core.supervision import supervised
from apps.orchestrator.control import api_keys
from apps.orchestrator.reading.event_feed import EventFeed

logger = logging.getLogger(__name__)

REVOCATION_CHECK_SECONDS = 2.0


async def _end_streams_of_revoked_keys(feed: EventFeed, engine: AsyncEngine) -> None:
    owners = {owner for owner in feed.stream_owners() if isinstance(owner, uuid.UUID)}
    if not owners:
        return
    async with engine.connect() as connection:
        revoked = await api_keys.revoked_among(connection, owners)
    if revoked:
        logger.info("ending the event streams of %d revoked API key(s)", len(revoked))
        feed.end_streams_of(revoked)


async def _watch(feed: EventFeed, engine: AsyncEngine, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await _end_streams_of_revoked_keys(feed, engine)
        except (OSError, SQLAlchemyError) as error:
            # The next check tries again; until then the streams go on, as they were allowed.
            logger.warning("could not check the keys of open event streams: %s", error)


def streams_end_on_revocation(
    feed: EventFeed, engine: AsyncEngine, every: float = REVOCATION_CHECK_SECONDS
) -> contextlib.AbstractAsyncContextManager[None]:
    """Check the keys of `feed`'s open streams every `every` seconds while the block runs."""
    return supervised("stream-key-revocations", functools.partial(_watch, feed, engine, every))
