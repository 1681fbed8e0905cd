"""A standalone worker (`make worker`, WORKER_IN_API=0 on the API) serves its own metrics on
WORKER_METRICS_PORT: what only it records (node duration, LLM usage, leases taken back) is
scraped there, as the documented deployment needs for its dashboards and the
`CrewLeasesExpired` alert."""

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, ROOT
from tests.servers import api_process, free_port, worker_process

HEADERS = {"X-API-Key": API_KEY}
DEMO_NODES = 6  # plan, three writers, review, assembly


def _eventually(check: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)
    return found


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url, timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def _reachable(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _succeeded(run: dict[str, Any]) -> dict[str, Any] | None:
    return run if run["status"] == "succeeded" else None


def test_a_demo_run_through_a_standalone_worker_moves_its_metrics(
    migrated_database: str, tmp_path: Path
) -> None:
    api_port, metrics_port = free_port(), free_port()
    worker_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    settings = {"WORKER_IN_API": "0", "DEMO_LATENCY_MS": "20"}
    with (
        api_process(migrated_database, tmp_path, api_port, METRICS_ENABLED="1", **settings),
        worker_process(
            migrated_database, tmp_path, "metrics", WORKER_METRICS_PORT=str(metrics_port)
        ),
    ):
        base_url = f"http://127.0.0.1:{api_port}"
        _eventually(lambda: _reachable(worker_metrics))
        before = _samples(worker_metrics)
        task = {"title": "Measured", "task_spec": {"type": "demo"}}
        run = httpx.post(f"{base_url}/tasks", headers=HEADERS, json=task).json()
        run_url = f"{base_url}/runs/{run['id']}"
        final = _eventually(lambda: _succeeded(httpx.get(run_url, headers=HEADERS).json()))
        after = _samples(worker_metrics)
        api = _samples(f"{base_url}/metrics")

    count = "crew_node_duration_seconds_count"
    assert _total(before, count) == 0
    assert _total(after, count) == DEMO_NODES
    assert _total(after, "crew_llm_tokens_total") == final["usage"]["total_tokens"] > 0
    assert ("crew_leases_taken_back_total", frozenset()) in after
    # What the worker did is not in the API's process: without the worker's endpoint it was lost.
    assert _total(api, count) == 0
    assert ("crew_runs", frozenset({("status", "succeeded")})) not in after


def test_a_worker_that_cannot_listen_for_scrapes_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "apps.orchestrator.worker"],
            cwd=tmp_path,
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
                "WORKER_METRICS_PORT": str(port),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]
