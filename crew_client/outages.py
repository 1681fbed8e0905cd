"""Riding out an outage: the server restarting, its database down (a 503 with Retry-After), a
proxy with no server behind it (502, 504). What the event streams and `crew watch` share: which
failures are an outage rather than an answer, how long to wait before trying again, and when
the server was lost and when it is back."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from crew_client.errors import ApiError, CrewClientError, CrewConnectionError
from crew_client.retry import RetryPolicy

T = TypeVar("T")
# What a server that is away for a while answers, or a proxy in front of it.
OUTAGE_STATUSES = frozenset({502, 503, 504})
# The longest backoff is the policy's delay of this retry (capped by its `max_delay`).
_LONGEST_STEP = 5


def is_outage(error: CrewClientError) -> bool:
    """Whether `error` says the server cannot answer for now, rather than what it answers."""
    if isinstance(error, CrewConnectionError):
        return True
    return isinstance(error, ApiError) and error.status in OUTAGE_STATUSES


@dataclass
class Outage:
    """The failures in a row while the server is away. `wait` after each says how long to wait
    before trying again: the policy's backoff, growing to a bound, or what Retry-After asks
    when longer (capped by the policy too). `over` once something worked again.

    `limit` failures in a row end the wait (None: never). `on_lost` hears the first failure of
    an outage, and `on_back` that it is over, once each per outage.
    """

    policy: RetryPolicy
    limit: int | None = None
    on_lost: Callable[[CrewClientError], None] | None = None
    on_back: Callable[[], None] | None = None
    failures: int = 0

    def wait(self, error: CrewClientError) -> float | None:
        """Seconds to wait before trying again after `error`; None when it is not an outage,
        or one of `limit` failures, and the caller should raise it."""
        if not is_outage(error):
            return None
        self.failures += 1
        if self.limit is not None and self.failures >= self.limit:
            return None
        if self.failures == 1 and self.on_lost is not None:
            self.on_lost(error)
        retry_after = error.retry_after if isinstance(error, ApiError) else None
        return self.policy.delay(min(self.failures - 1, _LONGEST_STEP), retry_after)

    def over(self) -> None:
        if self.failures and self.on_back is not None:
            self.on_back()
        self.failures = 0

    def ride(self, attempt: Callable[[], T]) -> T:
        """What `attempt` returns, once it does: tried again after each outage's wait."""
        while True:
            try:
                value = attempt()
            except CrewClientError as error:
                seconds = self.wait(error)
                if seconds is None:
                    raise
                time.sleep(seconds)
                continue
            self.over()
            return value
