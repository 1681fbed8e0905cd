"""A success whose body is not the API's (a proxy's sign-in page, another service at the URL)
is an `UnexpectedAnswer` naming the request, not a validation error of the model."""

from collections.abc import Callable

import httpx
import pytest

from crew_client import AsyncClient, Client, CrewClientError, UnexpectedAnswer

RUN = "5c1b2b6e-0000-4000-8000-000000000000"


def _sign_in_page(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, html="<html><form>Sign in</form></html>")


def _another_service(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"items": [{"id": 1}], "next_cursor": None})


def _stream_of_other_things(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        text='id: 1\ndata: {"hello": "world"}\n\n',
        headers={"Content-Type": "text/event-stream"},
    )


@pytest.mark.parametrize("answer", [_sign_in_page, _another_service])
def test_a_body_that_is_not_the_models_is_an_unexpected_answer(
    answer: Callable[[httpx.Request], httpx.Response],
) -> None:
    with Client("http://crew.test", "key", transport=httpx.MockTransport(answer)) as crew:
        with pytest.raises(UnexpectedAnswer) as refused:
            crew.get_run(RUN)
        with pytest.raises(UnexpectedAnswer):
            crew.list_runs()
    message = str(refused.value)
    assert message.startswith(f"GET /runs/{RUN} answered 200 (")
    assert "\n" not in message
    assert isinstance(refused.value, CrewClientError)


def test_settings_that_are_not_json_are_an_unexpected_answer() -> None:
    transport = httpx.MockTransport(_sign_in_page)
    crew = Client("http://crew.test", "key", transport=transport)
    with crew, pytest.raises(UnexpectedAnswer, match="GET /config/operator answered 200"):
        crew.get_operator_config()


def test_a_stream_that_opens_on_a_page_is_an_unexpected_answer_not_a_silent_stream() -> None:
    transport = httpx.MockTransport(_sign_in_page)
    crew = Client("http://crew.test", "key", transport=transport)
    with crew, pytest.raises(UnexpectedAnswer, match=r"events/stream answered 200 \(text/html"):
        list(crew.stream_events(RUN))


def test_an_event_that_is_not_the_apis_is_an_unexpected_answer() -> None:
    transport = httpx.MockTransport(_stream_of_other_things)
    crew = Client("http://crew.test", "key", transport=transport)
    with crew, pytest.raises(UnexpectedAnswer, match="not an event of the API"):
        list(crew.stream_events(RUN))


async def test_the_async_client_says_so_too() -> None:
    transport = httpx.MockTransport(_sign_in_page)
    async with AsyncClient("http://crew.test", "key", transport=transport) as crew:
        with pytest.raises(UnexpectedAnswer):
            await crew.get_run(RUN)
    async with AsyncClient("http://crew.test", "key", transport=transport) as crew:
        with pytest.raises(UnexpectedAnswer, match="events/stream answered 200"):
            async for _ in crew.stream_events(RUN):
                pass
    transport = httpx.MockTransport(_stream_of_other_things)
    async with AsyncClient("http://crew.test", "key", transport=transport) as crew:
        with pytest.raises(UnexpectedAnswer):
            async for _ in crew.stream_events(RUN):
                pass
