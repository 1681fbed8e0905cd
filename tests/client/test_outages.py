"""An outage (no connection, 502, 503, 504) is waited out, after its Retry-After, with a backoff
that stops growing; what the server answers otherwise is not. The event streams and `crew watch`
share this (`crew_client.outages`)."""

import json
from collections.abc import Callable

import httpx
import pytest

from crew_client import (
    AsyncClient,
    Client,
    CrewClientError,
    CrewConnectionError,
    NotFound,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    UnexpectedAnswer,
)
from crew_client.errors import error_of
from crew_client.outages import Outage

RUN = "5c1b2b6e-0000-4000-8000-000000000000"
QUICK = RetryPolicy(attempts=2, backoff=0.001, max_delay=0.01, jitter=0)


def _answered(status: int, retry_after: str | None = None) -> CrewClientError:
    headers = {"Retry-After": retry_after} if retry_after else {}
    request = httpx.Request("GET", f"http://crew.test/runs/{RUN}")
    return error_of(
        httpx.Response(status, json={"detail": "away"}, headers=headers, request=request)
    )


@pytest.mark.parametrize(
    "error",
    [_answered(404), _answered(401), _answered(500), UnexpectedAnswer("a sign-in page")],
    ids=["404", "401", "500", "unexpected"],
)
def test_an_answer_is_no_outage(error: CrewClientError) -> None:
    assert Outage(RetryPolicy()).wait(error) is None


def test_an_outage_waits_its_retry_after_within_the_policys_bound() -> None:
    outage = Outage(RetryPolicy(backoff=0.25, max_delay=10, jitter=0))

    assert outage.wait(_answered(503, "3")) == 3
    assert outage.wait(_answered(503, "3600")) == 10
    waits = [outage.wait(CrewConnectionError("refused")) for _ in range(50)]
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0] and set(waits[4:]) == {8.0}
    assert isinstance(_answered(502), ServerError) and outage.wait(_answered(502)) == 8.0


def test_lost_and_back_are_said_once_per_outage() -> None:
    heard: list[str] = []
    outage = Outage(
        QUICK,
        on_lost=lambda error: heard.append(f"lost: {error}"),
        on_back=lambda: heard.append("back"),
    )
    outage.over()
    for _ in range(2):
        for status in (502, 503, 504):
            outage.wait(_answered(status))
        outage.over()
        outage.over()

    assert heard == ["lost: 502: away", "back", "lost: 502: away", "back"]


def test_a_limit_ends_the_wait() -> None:
    outage = Outage(QUICK, limit=3)

    assert [outage.wait(_answered(503)) is None for _ in range(3)] == [False, False, True]


def _answers(*statuses: int) -> Callable[[httpx.Request], httpx.Response]:
    """A server answering each request with the next status (0: a refused connection), then
    with a run that succeeded and its stream of one final event."""
    pending = iter(statuses)

    def answer(request: httpx.Request) -> httpx.Response:
        status = next(pending, 200)
        if status == 0:
            raise httpx.ConnectError("refused", request=request)
        if status != 200:
            return httpx.Response(status, json={"detail": "away"}, headers={"Retry-After": "0"})
        event = {
            "id": 7,
            "run_id": RUN,
            "node_id": None,
            "type": "run.succeeded",
            "ts": "2025-01-01T00:00:00Z",
            "data": {},
        }
        stream = f"id: 7\ndata: {json.dumps(event)}\n\n"
        return httpx.Response(200, text=stream, headers={"Content-Type": "text/event-stream"})

    return answer


OUTAGE = (502, 0, 503, 504)


def _client(*statuses: int) -> Client:
    return Client(
        "http://crew.test", "key", retry=QUICK, transport=httpx.MockTransport(_answers(*statuses))
    )


def test_ride_tries_again_until_the_server_answers() -> None:
    with _client(*OUTAGE, 404) as crew, pytest.raises(NotFound):
        Outage(QUICK).ride(lambda: crew.get_run(RUN))


def test_a_stream_rides_out_an_outage() -> None:
    with _client(*OUTAGE) as crew:
        assert [event.type for event in crew.stream_events(RUN)] == ["run.succeeded"]


def test_a_stream_gives_up_after_its_limit_with_the_last_failure() -> None:
    # attempts * 4 failures in a row
    with _client(*([503] * 8)) as crew, pytest.raises(ServiceUnavailable):
        list(crew.stream_events(RUN))


def test_a_stream_ends_on_what_the_server_answers() -> None:
    with _client(502, 401) as crew, pytest.raises(Unauthorized):
        list(crew.stream_events(RUN))


async def test_the_async_stream_rides_out_an_outage_too() -> None:
    transport = httpx.MockTransport(_answers(*OUTAGE))
    async with AsyncClient("http://crew.test", "key", retry=QUICK, transport=transport) as crew:
        assert [event.type async for event in crew.stream_events(RUN)] == ["run.succeeded"]
