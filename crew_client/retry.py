"""When the client tries a request again, and for how long: each call has a deadline, its
retries included (`Attempts`); within it a failure to connect, a 503, and for a request that
changes nothing a broken connection or a proxy's 502 or 504, are tried again after a backoff
with jitter, never sooner than the server's `Retry-After`."""

import random
import time
from dataclasses import dataclass

import httpx

# How long a call may take, its retries included, unless the client is given another.
DEFAULT_TIMEOUT = 30.0
# How long a connection may take to open: a server that accepts none in this is away.
CONNECT_TIMEOUT = 5.0
# An event stream waits for its next event as long as it takes; not for a connection.
STREAM_TIMEOUT = httpx.Timeout(None, connect=CONNECT_TIMEOUT)
# A retry whose backoff leaves less than this of the deadline is not worth sending.
_SHORTEST_TRY = 0.5
# A proxy's answer when the API behind it is away (502, 504); the request may have reached it.
_PROXY_OUTAGES = frozenset({502, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all (1: no retry); the n-th retry waits about `backoff * 2**n`
    seconds, at most `max_delay`, or the server's Retry-After when that is longer (capped too).

    A request that may change something (POST) is retried after a 503 (the API changed nothing)
    or a failure to connect (nothing was sent), never after a connection that broke or timed
    out once the request was sent, nor after a proxy's 502 or 504: the API may have done it.
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


def retryable_status(response: httpx.Response, *, idempotent: bool) -> bool:
    """Whether a request answered `response` may be sent again."""
    if response.status_code == 503:
        return True
    return idempotent and response.status_code in _PROXY_OUTAGES


def retryable_error(error: httpx.TransportError, *, idempotent: bool) -> bool:
    """Whether a request that failed with `error` may be sent again."""
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return True  # the request never reached the server
    return idempotent


class Attempts:
    """The tries of one call, within `seconds` of its start: each try's timeouts (a connection
    gets `CONNECT_TIMEOUT` at most, the answer what is left), and after a failure how long to
    wait before the next, or None when the call should fail now: the failure is not one to try
    again, the tries are spent, or the wait would end past the deadline.

    The deadline bounds waiting for an answer; a long answer that keeps coming (an artifact's
    content) is read to its end.
    """

    def __init__(self, policy: RetryPolicy, seconds: float, *, idempotent: bool) -> None:
        self.policy, self.seconds, self.idempotent = policy, seconds, idempotent
        self.deadline = time.monotonic() + seconds
        self.tried = 0

    def timeout(self) -> httpx.Timeout:
        """The timeouts of the next try."""
        self.tried += 1
        left = max(self.deadline - time.monotonic(), 0.001)
        return httpx.Timeout(left, connect=min(CONNECT_TIMEOUT, left))

    def after_error(self, error: httpx.TransportError) -> float | None:
        if not retryable_error(error, idempotent=self.idempotent):
            return None
        return self._wait()

    def after_response(self, response: httpx.Response) -> float | None:
        if not retryable_status(response, idempotent=self.idempotent):
            return None
        return self._wait(response.headers.get("Retry-After"))

    def _wait(self, retry_after: str | None = None) -> float | None:
        if self.tried >= self.policy.attempts:
            return None
        wait = self.policy.delay(self.tried - 1, retry_after)
        if time.monotonic() + wait + _SHORTEST_TRY > self.deadline:
            return None
        return wait

    def failure(self, error: httpx.TransportError) -> str:
        """Why the call failed with `error`, in words (httpx says only "timed out"), and for a
        request that changes something and may have reached the server, that it may be done."""
        if isinstance(error, httpx.ConnectTimeout):
            return f"no connection within {min(CONNECT_TIMEOUT, self.seconds):g}s"
        reason = str(error) or type(error).__name__
        if isinstance(error, httpx.TimeoutException):
            reason = f"no answer within {self.seconds:g}s"
        if self.idempotent or isinstance(error, httpx.ConnectError):
            return reason
        return f"{reason}; the server may have done it, check before sending it again"
