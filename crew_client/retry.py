"""When the client tries a request again: after a 503 or a connection error, with exponential
backoff and jitter, waiting at least what the server's `Retry-After` asks."""

import random
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all (1: no retry); the n-th retry waits about `backoff * 2**n`
    seconds, at most `max_delay`, or the server's Retry-After when that is longer (capped too).

    A request that may change something (POST) is retried after a 503 (the API changed nothing)
    or a failure to connect (nothing was sent), never after a connection that broke mid-way.
    """

    attempts: int = 4
    backoff: float = 0.25
    max_delay: float = 10.0
    jitter: float = 0.1

    def delay(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number `retry` (0 for the first)."""
        wait = min(self.max_delay, self.backoff * 2.0**retry)
        wait += random.uniform(0, self.jitter * wait)
        asked = _seconds(retry_after)
        if asked is None:
            return wait
        return min(self.max_delay, max(wait, asked))


NO_RETRY = RetryPolicy(attempts=1)


def _seconds(retry_after: str | None) -> float | None:
    if retry_after is None or not retry_after.strip().isdigit():
        return None  # an HTTP date is not something this API sends
    return float(retry_after)


def retryable_status(response: httpx.Response) -> bool:
    return response.status_code == 503


def retryable_error(error: httpx.TransportError, *, idempotent: bool) -> bool:
    """Whether a request that failed with `error` may be sent again."""
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return True  # the request never reached the server
    return idempotent
