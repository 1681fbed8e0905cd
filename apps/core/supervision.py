"""Background tasks that must live as long as their process: the worker's loops, the event feed's
reader and its wake sources. Each runs under `supervise`, which restarts it when it fails, so that
one unexpected error never silently stops leases being renewed, cancels being watched or events
being streamed.

A failure is logged and, unless it is the database being out of reach or busy (`is_transient`),
reported to Sentry with the task's name; the task restarts after a delay that doubles with each
failure in a row, up to `max_delay`, and starts again from `first_delay` once the task has run
for `max_delay` without failing.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn

from apps.core.database import describe_fault, is_transient
from apps.core.error_reporting import report_error

logger = logging.getLogger(__name__)

FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 30.0


async def supervise(
    name: str,
    work: Callable[[], Awaitable[object]],
    *,
    first_delay: float = FIRST_DELAY_SECONDS,
    max_delay: float = MAX_DELAY_SECONDS,
) -> NoReturn:
    """Run `work()` until cancelled, restarting it whenever it fails or returns."""
    loop = asyncio.get_running_loop()
    delay = first_delay
    while True:
        started = loop.time()
        try:
            await work()
        except Exception as error:
            if _stopping():
                # It failed while being stopped: stopping it is what was asked.
                raise
            _log_failure(name, error, delay)
        else:
            logger.error("%s returned, which it should never do; restarting it in %gs", name, delay)
        if loop.time() - started >= max_delay:
            delay = first_delay
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


def start_supervised(
    name: str,
    work: Callable[[], Awaitable[object]],
    *,
    first_delay: float = FIRST_DELAY_SECONDS,
    max_delay: float = MAX_DELAY_SECONDS,
) -> "asyncio.Task[NoReturn]":
    """A task running `supervise(name, work, ...)`; cancel it to stop the work."""
    supervised = supervise(name, work, first_delay=first_delay, max_delay=max_delay)
    return asyncio.create_task(supervised, name=name)


@contextlib.asynccontextmanager
async def supervised(
    name: str,
    work: Callable[[], Awaitable[object]],
    *,
    first_delay: float = FIRST_DELAY_SECONDS,
    max_delay: float = MAX_DELAY_SECONDS,
) -> AsyncIterator[None]:
    """Run `work()` under `supervise` while the block runs; stop it when the block ends."""
    task = start_supervised(name, work, first_delay=first_delay, max_delay=max_delay)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _stopping() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _log_failure(name: str, error: Exception, delay: float) -> None:
    if is_transient(error):
        logger.warning("%s failed, restarting in %gs: %s", name, delay, describe_fault(error))
        return
    report_error(error, task=name)
    logger.error("%s failed, restarting in %gs", name, delay, exc_info=error)
