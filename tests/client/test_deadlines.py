"""A call has a deadline, its retries included, and is tried again only when that cannot do
something twice: a failure to connect and a 503 for any request; a connection that broke or
timed out and a proxy's 502 or 504 only for a request that changes nothing (GET)."""

import time
from collections.abc import Callable

import httpx
import pytest

from crew_client import (
    AsyncClient,
    Client,
    CrewConnectionError,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
)

RUN = "5c1b2b6e-0000-4000-8000-000000000000"
QUICK = RetryPolicy(attempts=3, backoff=0.001, max_delay=0.01, jitter=0)
RUNS_PAGE = {"items": [], "next_cursor": None}


def _failing(failure: int | type[httpx.TransportError], seen: list[str]) -> httpx.MockTransport:
    """A server failing each request with `failure`: a status, or an error of the transport."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if isinstance(failure, int):
            return httpx.Response(failure, json={"detail": "away"}, headers={"Retry-After": "0"})
        raise failure("failed", request=request)

    return httpx.MockTransport(answer)


def _client(transport: httpx.BaseTransport, timeout: float = 30) -> Client:
    return Client("http://crew.test", "key", retry=QUICK, timeout=timeout, transport=transport)


SUBMIT: Callable[[Client], object] = lambda crew: crew.submit_task("T", {"type": "demo"})  # noqa: E731
LIST: Callable[[Client], object] = lambda crew: crew.list_runs()  # noqa: E731


@pytest.mark.parametrize(
    ("failure", "raised"),
    [
        (502, ServerError),
        (504, ServerError),
        (httpx.ReadTimeout, CrewConnectionError),
        (httpx.RemoteProtocolError, CrewConnectionError),
    ],
)
def test_what_may_have_reached_the_api_is_retried_for_a_read_only(
    failure: int | type[httpx.TransportError], raised: type[Exception]
) -> None:
    for send, tries in ((LIST, QUICK.attempts), (SUBMIT, 1)):
        seen: list[str] = []
        with _client(_failing(failure, seen)) as crew, pytest.raises(raised):
            send(crew)
        assert len(seen) == tries, seen


@pytest.mark.parametrize(
    ("failure", "raised"), [(503, ServiceUnavailable), (httpx.ConnectError, CrewConnectionError)]
)
def test_what_the_api_did_not_do_is_retried_for_a_submission_too(
    failure: int | type[httpx.TransportError], raised: type[Exception]
) -> None:
    seen: list[str] = []
    with _client(_failing(failure, seen)) as crew, pytest.raises(raised):
        SUBMIT(crew)
    assert seen == ["POST"] * QUICK.attempts


def test_a_retry_after_past_the_deadline_fails_at_once() -> None:
    def unavailable(_: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"detail": "down"}, headers={"Retry-After": "5"})

    started = time.monotonic()
    transport = httpx.MockTransport(unavailable)
    crew = Client("http://crew.test", "key", retry=RetryPolicy(), timeout=2, transport=transport)
    with crew, pytest.raises(ServiceUnavailable):
        crew.list_runs()
    assert time.monotonic() - started < 1


def test_each_try_waits_only_what_is_left_of_the_deadline() -> None:
    given: list[httpx.Timeout] = []

    def slow(request: httpx.Request) -> httpx.Response:
        given.append(httpx.Timeout(**request.extensions["timeout"]))
        if len(given) < 3:
            time.sleep(0.3)
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json=RUNS_PAGE)

    with _client(httpx.MockTransport(slow), timeout=10) as crew:
        assert crew.list_runs().items == []
    assert [timeout.connect for timeout in given] == [5, 5, 5]
    assert given[0].read == pytest.approx(10, abs=0.1)
    assert given[2].read == pytest.approx(10 - 0.6, abs=0.15)


async def test_the_async_client_keeps_the_same_deadline() -> None:
    seen: list[str] = []
    transport = httpx.MockTransport(lambda request: _answer_slowly(request, seen))
    async with AsyncClient(
        "http://crew.test", "key", retry=QUICK, timeout=2, transport=transport
    ) as crew:
        with pytest.raises(CrewConnectionError, match=r"POST /tasks: no answer within 2s; "):
            await crew.submit_task("T", {"type": "demo"})
    assert seen == ["POST"]


def _answer_slowly(request: httpx.Request, seen: list[str]) -> httpx.Response:
    seen.append(request.method)
    raise httpx.ReadTimeout("timed out", request=request)
