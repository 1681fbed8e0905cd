"""A worker killed with SIGKILL mid-run: the run still finishes, and nothing is done twice."""

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import API_KEY
from tests.servers import api_process, free_port

HEADERS = {"X-API-Key": API_KEY}
SLOW = {"DEMO_LATENCY_MS": "1500", "LEASE_SECONDS": "2"}


def _wait_for(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {seconds:g} s")


def _events(base: str, run_id: str) -> list[dict]:
    response = httpx.get(f"{base}/events", params={"run_id": run_id, "limit": 200}, headers=HEADERS)
    return response.json()["items"]


def _kill_mid_run_and_restart(database_url: str, workdir: Path) -> tuple[str, list[dict], str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with api_process(database_url, workdir, port, **SLOW) as first:
        body = {"title": "Killed", "task_spec": {"type": "demo"}}
        run_id = httpx.post(f"{base}/tasks", json=body, headers=HEADERS).json()["id"]
        _wait_for(
            lambda: any(
                e["type"] == "node.started" and e["data"]["attempt"] == 1
                for e in _events(base, run_id)[3:]
            ),
            30,
            "a writer starting",
        )
        first.kill()
        first.wait()
    with api_process(database_url, workdir, port, **SLOW):
        run = _wait_for(
            lambda: (
                (r := httpx.get(f"{base}/runs/{run_id}", headers=HEADERS).json())["status"]
                in ("succeeded", "failed")
                and r
            ),
            90,
            "the run finishing after the restart",
        )
        return run_id, _events(base, run_id), run["status"]


def test_a_run_survives_its_worker_being_killed(migrated_database: str, tmp_path: Path) -> None:
    run_id, events, status = _kill_mid_run_and_restart(migrated_database, tmp_path)

    assert status == "succeeded"
    succeeded = Counter(e["node_id"] for e in events if e["type"] == "node.succeeded")
    assert len(succeeded) == 6
    assert set(succeeded.values()) == {1}
    artifacts = Counter(e["node_id"] for e in events if e["type"] == "artifact.created")
    assert set(artifacts.values()) == {1}
    assert any(
        e["type"] == "node.retrying" and e["data"]["cause"] == "lease_expired" for e in events
    )
    written = sorted(tmp_path.glob(f"artifacts/{run_id}/*/*.md"))
    assert len(written) == 6
