"""Live event streams over a real uvicorn server, with the worker in the API process: what a
client receives across a disconnect and a reconnect is exactly what `GET /events` lists."""

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alembic import command
from apps.cli.api import SHUTDOWN_GRACE_SECONDS
from tests.conftest import API_KEY, alembic_config, empty_database_url
from tests.servers import api_process, free_port
from tests.sse import SseStream

SETTINGS = {"WORKER_IN_API": "1", "DEMO_LATENCY_MS": "150", "SSE_HEARTBEAT_SECONDS": "0.3"}
WAIT = 30.0


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One API process per backend for the module, on a database of its own."""
    workdir: Path = tmp_path_factory.mktemp(f"streams-{request.param}")
    for url in empty_database_url(request.param, workdir):
        command.upgrade(alembic_config(url), "head")
        port = free_port()
        with api_process(url, workdir, port, **SETTINGS):
            yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def client(served: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-API-Key": API_KEY}
    async with httpx.AsyncClient(base_url=served, headers=headers, timeout=WAIT) as http:
        yield http


async def start_demo(client: httpx.AsyncClient, title: str = "Watched") -> str:
    response = await client.post("/tasks", json={"title": title, "task_spec": {"type": "demo"}})
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def read(
    client: httpx.AsyncClient,
    path: str,
    *,
    until: Any = None,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> tuple[SseStream, bool]:
    """Read `path` until `until(stream)` holds (then hang up) or the server ends the stream;
    what came, and whether the server ended it."""
    received = SseStream()
    async with (
        asyncio.timeout(WAIT),
        client.stream("GET", path, params=params, headers=headers) as response,
    ):
        assert response.status_code == 200
        pending = ""
        async for text in response.aiter_text():
            pending += text
            *blocks, pending = pending.split("\n\n")
            for block in blocks:
                received.feed(block)
                if until is not None and until(received):
                    return received, False
    return received, True


async def polled(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    """Every event of the run through GET /events, every page."""
    items: list[dict[str, Any]] = []
    params = {"run_id": run_id, "limit": 200}
    while True:
        page = (await client.get("/events", params=params)).json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]


def has(count: int) -> Any:
    return lambda stream: len(stream.messages) >= count


@pytest.mark.parametrize("resume_with", ["Last-Event-ID", "after"])
async def test_a_reconnect_mid_run_misses_nothing_and_repeats_nothing(
    client: httpx.AsyncClient, resume_with: str
) -> None:
    run_id = await start_demo(client)
    path = f"/runs/{run_id}/events/stream"

    first, ended = await read(client, path, until=has(5))
    assert not ended
    await asyncio.sleep(0.3)  # events go on being written while nobody listens
    last_seen = str(first.ids[-1])
    if resume_with == "after":
        second, ended = await read(client, path, after=last_seen)
    else:
        second, ended = await read(client, path, headers={"Last-Event-ID": last_seen})

    assert ended
    assert second.messages[-1]["event"] == "run.succeeded"
    assert first.events + second.events == await polled(client, run_id)
    assert [m["event"] for m in first.messages + second.messages] == [
        event["type"] for event in first.events + second.events
    ]


async def test_the_stream_of_a_run_that_has_ended_replays_it_and_ends(
    client: httpx.AsyncClient,
) -> None:
    run_id = await start_demo(client)
    live, _ = await read(client, f"/runs/{run_id}/events/stream")

    replayed, ended = await read(client, "/events/stream", run_id=run_id)

    assert ended
    assert replayed.events == live.events == await polled(client, run_id)


async def test_a_quiet_stream_sends_heartbeats(client: httpx.AsyncClient) -> None:
    quiet, ended = await read(client, "/events/stream", until=lambda s: s.heartbeats >= 2)

    assert not ended
    assert quiet.messages == []


async def test_the_firehose_streams_every_run(client: httpx.AsyncClient) -> None:
    subscribed = asyncio.Event()

    def both_runs_finished(stream: SseStream) -> bool:
        if stream.heartbeats:  # a heartbeat comes once the stream waits for live events
            subscribed.set()
        return sum(message["event"] == "run.succeeded" for message in stream.messages) == 2

    firehose = asyncio.create_task(read(client, "/events/stream", until=both_runs_finished))
    await asyncio.wait_for(subscribed.wait(), WAIT)
    run_ids = [await start_demo(client, "First"), await start_demo(client, "Second")]

    received, _ = await firehose

    assert received.ids == sorted(received.ids)
    for run_id in run_ids:
        events = [event for event in received.events if event["run_id"] == run_id]
        assert events == await polled(client, run_id)


async def test_a_stream_resumed_past_the_newest_event_ends_with_its_run(
    client: httpx.AsyncClient,
) -> None:
    """An id no event has yet cannot have been seen: the stream goes on from the newest event
    and ends after the run's final one, instead of waiting for ids that come much later."""
    run_id = await start_demo(client, "Resumed from the future")

    streamed, ended = await read(
        client, f"/runs/{run_id}/events/stream", headers={"Last-Event-ID": str(10**15)}
    )

    assert ended
    assert streamed.messages[-1]["event"] == "run.succeeded"


def test_a_stopping_server_ends_its_streams_at_once_and_quietly(
    migrated_database: str, tmp_path: Path
) -> None:
    """uvicorn waits for responses to end before it stops: open streams used to hold it for the
    whole grace period, then die cancelled with a traceback each."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    ended: list[bool] = []

    def watch(path: str) -> None:
        with (
            httpx.Client(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=WAIT) as http,
            http.stream("GET", path) as response,
        ):
            for _ in response.iter_bytes():
                pass
            ended.append(True)

    with api_process(migrated_database, tmp_path, port, WORKER_IN_API="0") as server:
        task = {"title": "Never run", "task_spec": {"type": "demo"}}
        run_id = httpx.post(f"{base_url}/tasks", json=task, headers={"X-API-Key": API_KEY}).json()
        paths = ["/events/stream"] * 10 + [f"/runs/{run_id['id']}/events/stream"] * 10
        watchers = [threading.Thread(target=watch, args=(path,)) for path in paths]
        for watcher in watchers:
            watcher.start()
        _wait(lambda: _open_streams(tmp_path, port) == len(paths))
        asked_to_stop = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=WAIT)
        stopped_after = time.monotonic() - asked_to_stop
        for watcher in watchers:
            watcher.join(WAIT)

    log = (tmp_path / f"server-{port}.log").read_text()
    assert stopped_after < SHUTDOWN_GRACE_SECONDS / 2
    assert "Traceback" not in log
    assert "Cancel" not in log
    assert ended == [True] * len(paths)


def _open_streams(workdir: Path, port: int) -> int:
    return (workdir / f"server-{port}.log").read_text().count("/events/stream HTTP/1.1")


def _wait(condition: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)
