"""GET /events/stream and /runs/{run_id}/events/stream on runs that have ended (so the streams
end too); live streaming over a real server is in test_streams_served.py."""

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from apps.api.revocations import REVOCATION_CHECK_SECONDS
from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.control import api_keys
from apps.orchestrator.model.models import KeyRole, Run
from apps.orchestrator.model.states import RunStatus
from tests.api.pages import single_page
from tests.asgi import http_get
from tests.conftest import API_KEY
from tests.factories import create_event, create_node, create_run
from tests.sse import SseStream, parse_sse
from tests.waiting import until

WAIT = 10.0
TYPES = ["run.created", "run.started", "node.started", "node.succeeded", "run.succeeded"]


async def finished_run(sessions: SessionFactory) -> tuple[Run, list[int]]:
    """A succeeded run with a node and its log, and another run's events interleaved."""
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.SUCCEEDED)
        other = await create_run(session)
        node = await create_node(session, run)
        ids = []
        for type_ in TYPES:
            node_id = node.id if type_.startswith("node.") else None
            data = {"cause": "test", "nested": {"tokens": 3}}
            event = await create_event(session, run, type=type_, node_id=node_id, data=data)
            ids.append(event.id)
            await create_event(session, other, type="run.created")
    return run, ids


async def stream(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None, **params: Any
) -> SseStream:
    async with asyncio.timeout(WAIT):  # a stream that failed to end fails the test, not the suite
        response = await client.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    return parse_sse(response.text)


@pytest.fixture(params=["run path", "run_id query"])
def stream_path(request: pytest.FixtureRequest) -> Any:
    """Both routes to one run's stream, as a function of the run."""
    if request.param == "run path":
        return lambda run: (f"/runs/{run.id}/events/stream", {})
    return lambda run: ("/events/stream", {"run_id": str(run.id)})


async def test_a_runs_stream_is_its_log_in_the_shape_of_get_events_and_ends(
    client: httpx.AsyncClient, sessions: SessionFactory, stream_path: Any
) -> None:
    run, ids = await finished_run(sessions)
    path, params = stream_path(run)

    streamed = await stream(client, path, **params)

    polled = await single_page(client, "/events", run_id=str(run.id))
    assert streamed.ids == ids
    assert streamed.events == polled
    assert [message["event"] for message in streamed.messages] == TYPES


@pytest.mark.parametrize(
    ("resume", "skipped"),
    [
        ({"headers": {"Last-Event-ID": "{1}"}}, 2),
        ({"after": "{2}"}, 3),
        ({"after": "{0}", "headers": {"Last-Event-ID": "{3}"}}, 4),
    ],
    ids=["Last-Event-ID", "after", "the later of both"],
)
async def test_a_stream_resumes_after_the_event_id_given(
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    stream_path: Any,
    resume: dict[str, Any],
    skipped: int,
) -> None:
    run, ids = await finished_run(sessions)
    path, params = stream_path(run)
    headers = {name: value.format(*ids) for name, value in resume.get("headers", {}).items()}
    if "after" in resume:
        params["after"] = resume["after"].format(*ids)

    streamed = await stream(client, path, headers=headers, **params)

    assert streamed.ids == ids[skipped:]


async def test_a_stream_resumed_after_the_runs_final_event_is_empty(
    client: httpx.AsyncClient, sessions: SessionFactory, stream_path: Any
) -> None:
    run, ids = await finished_run(sessions)
    path, params = stream_path(run)

    streamed = await stream(client, path, headers={"Last-Event-ID": str(ids[-1])}, **params)

    assert streamed.messages == []


async def test_an_empty_last_event_id_means_no_id(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, ids = await finished_run(sessions)

    streamed = await stream(client, f"/runs/{run.id}/events/stream", {"Last-Event-ID": ""})

    assert streamed.ids == ids


async def test_timestamps_are_written_in_the_requested_time_zone(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, _ = await finished_run(sessions)
    paris = {"X-Timezone": "Europe/Paris"}

    streamed = await stream(client, f"/runs/{run.id}/events/stream", headers=paris)

    polled = await single_page(client, "/events", headers=paris, run_id=str(run.id))
    assert streamed.events == polled
    assert all(event["ts"].endswith(("+01:00", "+02:00")) for event in streamed.events)


@pytest.mark.parametrize("path", ["/runs/{run_id}/events/stream", "/events/stream?run_id={run_id}"])
async def test_the_stream_of_an_unknown_run_is_a_404_before_streaming(
    client: httpx.AsyncClient, path: str
) -> None:
    run_id = uuid.uuid4()

    response = await client.get(path.format(run_id=run_id))

    assert response.status_code == 404
    assert response.json() == {"detail": f"run {run_id} not found"}


@pytest.mark.parametrize(
    "last_event_id", ["abc", "-1", "9223372036854775808", "1.5", "5_0", "+5", "5 5"]
)
async def test_a_last_event_id_that_is_not_an_event_id_is_a_400(
    client: httpx.AsyncClient, sessions: SessionFactory, last_event_id: str
) -> None:
    run, _ = await finished_run(sessions)

    response = await client.get(
        f"/runs/{run.id}/events/stream", headers={"Last-Event-ID": last_event_id}
    )

    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["detail"]


@pytest.mark.parametrize("after", ["5_0", "+5", "0x5", "5.0"])
async def test_an_after_that_is_not_an_event_id_is_a_422(
    client: httpx.AsyncClient, sessions: SessionFactory, after: str
) -> None:
    run, _ = await finished_run(sessions)

    for path in (f"/runs/{run.id}/events/stream", "/events"):
        response = await client.get(path, params={"after": after, "run_id": str(run.id)})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["errors"][0]["loc"] == ["query", "after"]


async def test_a_viewer_may_watch_a_run(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, ids = await finished_run(sessions)
    async with unit_of_work(sessions) as session:
        viewer = await api_keys.create_key(session, "watcher", KeyRole.VIEWER)

    streamed = await stream(
        client, f"/runs/{run.id}/events/stream", headers={"X-API-Key": viewer.secret}
    )

    assert streamed.ids == ids


@pytest.mark.parametrize("path", ["/events/stream", f"/runs/{uuid.uuid4()}/events/stream"])
async def test_streams_need_a_key(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers={"X-API-Key": "wrong"})

    assert response.status_code == 401


async def test_the_openapi_schema_documents_the_streams_as_server_sent_events(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()

    for path in ("/events/stream", "/runs/{run_id}/events/stream"):
        operation = schema["paths"][path]["get"]
        content = operation["responses"]["200"]["content"]
        assert list(content) == ["text/event-stream"]
        data = content["text/event-stream"]["itemSchema"]["properties"]["data"]
        assert data["contentSchema"] == {"$ref": "#/components/schemas/Event"}
        assert operation["description"]
        parameters = {parameter["name"] for parameter in operation["parameters"]}
        assert {"after", "Last-Event-ID"} <= parameters


async def test_a_client_that_hangs_up_mid_stream_releases_its_subscription(
    app: FastAPI, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.RUNNING)
        await create_event(session, run, type="run.started")
    feed = app.state.event_feed
    requested, hung_up = asyncio.Event(), asyncio.Event()
    subscribers_while_streaming = []

    async def receive() -> dict[str, Any]:
        if not requested.is_set():
            requested.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and b"run.started" in message["body"]:
            subscribers_while_streaming.append(feed.subscriber_count)
            hung_up.set()

    path = f"/runs/{run.id}/events/stream"
    await asyncio.wait_for(app(keyed_get(path), receive, send), WAIT)

    assert subscribers_while_streaming == [1]
    assert feed.subscriber_count == 0


@pytest.mark.parametrize("path", ["/events/stream", "/runs/{run_id}/events/stream"])
async def test_a_stream_ends_within_seconds_of_its_keys_revocation(
    app: FastAPI, sessions: SessionFactory, path: str
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.RUNNING)
        await create_event(session, run, type="run.started")
        watcher = await api_keys.create_key(session, "watcher", KeyRole.VIEWER)
        other = await api_keys.create_key(session, "other", KeyRole.VIEWER)
    feed = app.state.event_feed
    started: list[int] = []

    async def receive() -> dict[str, Any]:
        if not started:
            started.append(1)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never hangs up
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        return None

    def watch(key: str) -> "asyncio.Task[None]":
        scope = keyed_get(path.format(run_id=run.id), key)
        return asyncio.create_task(app(scope, receive, send))

    revoked_stream, other_stream = watch(watcher.secret), watch(other.secret)
    await until(lambda: feed.subscriber_count == 2, WAIT)
    async with unit_of_work(sessions) as session:
        await api_keys.revoke_key(session, "watcher")
    revoked_at = asyncio.get_running_loop().time()

    await asyncio.wait_for(revoked_stream, REVOCATION_CHECK_SECONDS + 3)

    assert asyncio.get_running_loop().time() - revoked_at <= REVOCATION_CHECK_SECONDS + 1
    assert not other_stream.done()
    assert feed.subscriber_count == 1
    other_stream.cancel()


def keyed_get(path: str, key: str = API_KEY) -> dict[str, Any]:
    """The ASGI scope of a GET with an API key, as uvicorn builds it."""
    return http_get(path, (b"x-api-key", key.encode()))
