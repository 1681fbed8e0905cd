"""An operator's cancel or gate decision, received by an API process, takes effect within a second
on the worker process running the run (PostgreSQL, where API and workers are separate)."""

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY
from tests.servers import api_process, free_port, worker_process

HEADERS = {"X-API-Key": API_KEY}
SETTINGS = {"WORKER_IN_API": "0", "DEMO_LATENCY_MS": "3000", "LOG_LEVEL": "warning"}
GATED = {
    "type": "dag",
    "nodes": [
        {"key": "draft", "role": "writer", "prompt": "Draft.", "gate": {"when": "before"}},
    ],
}


@pytest.fixture
def api(postgres_database: str, tmp_path: Path) -> Iterator[httpx.Client]:
    """An API process and a standalone worker process on one database; a client of the API."""
    port = free_port()
    with (
        api_process(postgres_database, tmp_path, port, **SETTINGS),
        worker_process(postgres_database, tmp_path, "worker", **SETTINGS),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=30) as client,
    ):
        yield client


def _wait_for(check: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError("the condition did not hold in time")


def _event(client: httpx.Client, run_id: str, kind: str) -> dict[str, Any] | None:
    items = client.get("/events", params={"run_id": run_id, "type": kind}).json()["items"]
    return items[0] if items else None


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["ts"])


def test_a_cancel_stops_the_other_process_calls_within_a_second(api: httpx.Client) -> None:
    run_id = api.post("/tasks", json={"title": "Slow", "task_spec": {"type": "demo"}}).json()["id"]
    _wait_for(lambda: _event(api, run_id, "node.started"))

    api.post(f"/runs/{run_id}/cancel")

    cancelled = _wait_for(lambda: _event(api, run_id, "run.cancelled"), 5)
    asked = _event(api, run_id, "run.cancel_requested")
    assert asked is not None
    assert (_at(cancelled) - _at(asked)).total_seconds() < 1.0


def test_an_approval_starts_the_node_on_the_other_process_within_a_second(
    api: httpx.Client,
) -> None:
    run_id = api.post("/tasks", json={"title": "Gated", "task_spec": GATED}).json()["id"]
    _wait_for(lambda: _event(api, run_id, "gate.waiting"))

    api.post(f"/runs/{run_id}/approve", json={})

    approved = _event(api, run_id, "gate.approved")
    started = _wait_for(lambda: _event(api, run_id, "node.started"), 5)
    assert approved is not None
    assert (_at(started) - _at(approved)).total_seconds() < 1.0
