"""What a loop that keeps failing for the same reason logs: a few lines an outage, not one a retry.

A background loop that retries when the database is out of reach (a supervised task, the LISTEN
connection of the event streams, the check of the keys of open streams) would log a warning per
retry: thousands an hour per process while the database is down. A `FaultStreak` counts the loop's
failures in a row and says them this way:

- `<name> failed, <then>`: a warning, for the first transient fault of a streak;
- `<name> still failing (N times in Xs), <then>`: a warning, at most one every `interval`
  (`STILL_FAILING_LOG_SECONDS`) however many faults come meanwhile;
- `<name> failed again, <then>`: a debug line, for each fault in between;
- `<name> is running again, after N failure(s) in a row over Xs`: when the loop works again, an
  info line if the streak was said above debug level, else a debug line.

The warnings are that far apart across streaks too: a database that flaps, up for seconds between
blinks, makes a streak of each blink and still a warning an interval at most. An unexpected error
is not the streak's to log: its caller says it as loudly as it should (an error, a report to
Sentry) every time, and counts it with `unexpected` so that the recovery is said.
"""

import asyncio
import logging
from collections.abc import Callable

# The least time between two warnings of a loop that keeps failing for the database.
STILL_FAILING_LOG_SECONDS = 60.0


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class FaultStreak:
    """One loop's failures in a row, and what of them is logged to `logger` (see the module's
    docstring). `clock` is the time the interval is measured in, the event loop's by default."""

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        *,
        interval: float = STILL_FAILING_LOG_SECONDS,
        clock: Callable[[], float] = _loop_time,
    ) -> None:
        self.name = name
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.failures = 0
        self._began = 0.0
        # Whether this streak was said above debug level; and until when a warning would come
        # too soon after the last, which outlives the streak.
        self._loud = False
        self._quiet_until = float("-inf")

    def transient(self, then: str, *args: object) -> None:
        """Count a transient fault and log it as `<name> failed, <then>` or a variant of it;
        `then` is a %-format of `args` saying what happens next and why (`describe_fault`)."""
        self._count()
        now = self.clock()
        if now < self._quiet_until:
            self.logger.debug("%s failed again, " + then, self.name, *args)
            return
        self._loud, self._quiet_until = True, now + self.interval
        if self.failures == 1:
            self.logger.warning("%s failed, " + then, self.name, *args)
            return
        self.logger.warning(
            "%s still failing (%d times in %.0fs), " + then,
            self.name,
            self.failures,
            now - self._began,
            *args,
        )

    def unexpected(self) -> None:
        """Count a failure its caller logged itself above debug level (an unexpected error),
        so that the streak's end is said at info level."""
        self._count()
        self._loud = True

    def over(self, at: float | None = None) -> None:
        """The loop works again, since `at` on the clock (now by default): the streak, if there
        is one, is over and said so."""
        if self.failures:
            self.logger.log(
                logging.INFO if self._loud else logging.DEBUG,
                "%s is running again, after %d failure(s) in a row over %.0fs",
                self.name,
                self.failures,
                (self.clock() if at is None else at) - self._began,
            )
        self.failures = 0
        self._loud = False

    def _count(self) -> None:
        self.failures += 1
        if self.failures == 1:
            self._began = self.clock()
