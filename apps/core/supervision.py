"""Background tasks that must live as long as their process: the worker and its loops, the event
feed's reader and its wake sources. Each runs under `supervise`, which restarts it when it fails,
so that one unexpected error never silently stops leases being renewed, cancels being watched,
gates timing out or events being streamed.

A task that fails restarts after a delay that doubles with each failure in a row, from
`first_delay` up to `max_delay` (`MAX_DELAY_SECONDS`, 5 s, by default): once what made it fail
goes away (the database answers again), no task is more than that behind. A task that has run
for `max_delay` without failing ends its streak of failures: its next failure starts from
`first_delay`, and an info line says it is running again (a debug line if the streak's failures
were all said at debug level, below).

What a failure logs:

- an unexpected error (not `is_transient`): an error line with its traceback, and a report to
  Sentry tagged with the task's name, every time;
- the database being out of reach or busy (`is_transient`): a warning for the first of a streak,
  then one every `STILL_FAILING_LOG_SECONDS` saying how long it has lasted, and debug lines for
  the restarts between: a `FaultStreak` (`apps/core/fault_log.py`) decides it, as it does for
  the other loops that retry. An outage of an hour is a few dozen lines per task, not one every
  few seconds, and never a report: it is the deployment's fault, not the code's. The warnings
  of a task are that far apart across streaks too: a database that flaps, up for seconds
  between blinks, makes a streak of each blink;
- a task that returns, which it should never do: an error line, every time.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn

from apps.core.database import describe_fault, is_transient
from apps.core.error_reporting import report_error
from apps.core.fault_log import STILL_FAILING_LOG_SECONDS, FaultStreak

logger = logging.getLogger(__name__)

FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 5.0


async def supervise(
    name: str,
    work: Callable[[], Awaitable[object]],
    *,
    first_delay: float = FIRST_DELAY_SECONDS,
    max_delay: float = MAX_DELAY_SECONDS,
) -> NoReturn:
    """Run `work()` until cancelled, restarting it whenever it fails or returns."""
    loop = asyncio.get_running_loop()
    streak = _Streak(name, first_delay, max_delay)
    while True:
        ended = loop.call_later(max_delay, streak.end, loop.time())
        try:
            await work()
        except Exception as error:
            if _stopping():
                # It failed while being stopped: stopping it is what was asked.
                raise
            delay = streak.failed(error)
        else:
            delay = streak.returned()
        finally:
            ended.cancel()
        await asyncio.sleep(delay)


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


class _Streak:
    """One supervised task's failures in a row: the delay before each restart, and what of them
    is logged (see the module's docstring; `FaultStreak` decides it for database faults)."""

    def __init__(self, name: str, first_delay: float, max_delay: float) -> None:
        self.name = name
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._next_delay = first_delay
        self._faults = FaultStreak(name, logger, interval=STILL_FAILING_LOG_SECONDS)

    def failed(self, error: Exception) -> float:
        """Count `error` in the streak and log it; the delay before the restart."""
        delay = self._delay()
        if is_transient(error):
            self._faults.transient("restarting in %gs: %s", delay, describe_fault(error))
        else:
            self._faults.unexpected()
            report_error(error, task=self.name)
            logger.error("%s failed, restarting in %gs", self.name, delay, exc_info=error)
        return delay

    def returned(self) -> float:
        """Count a return in the streak and log it; the delay before the restart."""
        delay = self._delay()
        self._faults.unexpected()
        logger.error(
            "%s returned, which it should never do; restarting it in %gs", self.name, delay
        )
        return delay

    def end(self, started: float) -> None:
        """The task, started at `started`, has run for `max_delay` without failing: the streak
        is over. Said at info level when its failures were said above debug."""
        self._faults.over(started)
        self._next_delay = self.first_delay

    def _delay(self) -> float:
        delay = self._next_delay
        self._next_delay = min(delay * 2, self.max_delay)
        return delay
