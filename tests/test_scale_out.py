"""A team's deployment on PostgreSQL: two API processes and three standalone workers on one
database, one worker killed with SIGKILL mid-run. Every run finishes, no node is done twice, and
subscribers of either API process see their run's whole event sequence live."""

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import API_KEY
from tests.servers import api_process, free_port, worker_process
from tests.sse import SseStream

HEADERS = {"X-API-Key": API_KEY}
RUNS = 100
WATCHED = 10
SETTINGS = {"WORKER_IN_API": "0", "DEMO_LATENCY_MS": "100", "LEASE_SECONDS": "2"}
FINAL = ("succeeded", "failed", "cancelled")


def _wait_for(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {seconds:g} s")


def _events(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    response = client.get("/events", params={"run_id": run_id, "limit": 200}, headers=HEADERS)
    return response.json()["items"]


def _started_by(client: httpx.Client, pid: int) -> bool:
    """Whether the worker process `pid` has started a node (of any run)."""
    params: dict[str, Any] = {"type": "node.started", "limit": 200}
    while True:
        page = client.get("/events", params=params, headers=HEADERS).json()
        if any(e["data"]["worker"].split(":")[1] == str(pid) for e in page["items"]):
            return True
        if page["next_cursor"] is None:
            return False
        params["cursor"] = page["next_cursor"]


def _watch(base_url: str, run_id: str) -> SseStream:
    """A run's event stream, read from its start until the server ends it."""
    received = SseStream()
    with (
        httpx.Client(base_url=base_url, timeout=120) as client,
        client.stream("GET", f"/runs/{run_id}/events/stream", headers=HEADERS) as response,
    ):
        pending = ""
        for text in response.iter_text():
            pending += text
            *blocks, pending = pending.split("\n\n")
            for block in blocks:
                received.feed(block)
    return received


def _all_ended(client: httpx.Client, run_ids: list[str]) -> bool:
    statuses = [
        client.get(f"/runs/{run_id}", headers=HEADERS).json()["status"] for run_id in run_ids
    ]
    return all(status in FINAL for status in statuses)


def test_two_apis_and_three_workers_run_every_node_once_through_a_killed_worker(
    postgres_database: str, tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        for port in ports:
            stack.enter_context(api_process(postgres_database, tmp_path, port, **SETTINGS))
        workers = [
            stack.enter_context(worker_process(postgres_database, tmp_path, name, **SETTINGS))
            for name in ("a", "b", "c")
        ]
        apis = [
            stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30))
            for port in ports
        ]
        body = {"task_spec": {"type": "demo"}}
        run_ids = [
            apis[index % 2]
            .post("/tasks", json={"title": f"Run {index}", **body}, headers=HEADERS)
            .json()["id"]
            for index in range(RUNS)
        ]
        # Every tenth run watched live, each from the API process that did not take it.
        watchers = stack.enter_context(ThreadPoolExecutor(WATCHED))
        watched = {
            run_id: watchers.submit(_watch, str(apis[1 - index % 2].base_url), run_id)
            for index, run_id in enumerate(run_ids)
            if index % (RUNS // WATCHED) == 0
        }
        victim = workers[2]
        _wait_for(lambda: _started_by(apis[0], victim.pid), 60, "the victim working")
        victim.kill()
        victim.wait()
        _wait_for(lambda: _all_ended(apis[1], run_ids), 180, "every run ending")

        runs = [apis[0].get(f"/runs/{run_id}", headers=HEADERS).json() for run_id in run_ids]
        events = {run_id: _events(apis[1], run_id) for run_id in run_ids}
        streams = {run_id: future.result(timeout=60) for run_id, future in watched.items()}

    assert Counter(run["status"] for run in runs) == {"succeeded": RUNS}
    for run_id, log in events.items():
        succeeded = Counter(e["node_id"] for e in log if e["type"] == "node.succeeded")
        assert len(succeeded) == 6, run_id
        assert set(succeeded.values()) == {1}, run_id
        written = Counter(e["node_id"] for e in log if e["type"] == "artifact.created")
        assert set(written.values()) == {1}, run_id
    workers_seen = {
        e["data"]["worker"].split(":")[1]
        for log in events.values()
        for e in log
        if e["type"] == "node.started"
    }
    assert workers_seen == {str(worker.pid) for worker in workers}
    for run_id, stream in streams.items():
        assert stream.ids == [event["id"] for event in events[run_id]], run_id
        assert stream.events == events[run_id], run_id
    taken_back = [
        e for log in events.values() for e in log if e["data"].get("cause") == "lease_expired"
    ]
    assert taken_back, "the killed worker's nodes were taken back"
