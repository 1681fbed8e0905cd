"""The real entry point: `python -m apps.api` serving HTTP through uvicorn."""

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, ROOT


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(base_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            httpx.get(f"{base_url}/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("the server did not come up within 30 s")


@pytest.fixture
def served(migrated_database: str, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": migrated_database,
        "API_KEY": API_KEY,
        "PORT": str(port),
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
    }
    log = tmp_path / "server.log"
    base_url = f"http://127.0.0.1:{port}"
    with (
        log.open("wb") as output,
        subprocess.Popen(
            [sys.executable, "-m", "apps.api"], cwd=tmp_path, env=env, stderr=output
        ) as server,
    ):
        try:
            _wait_until_up(base_url, server, log)
            yield base_url
        finally:
            server.terminate()


def test_the_served_api_answers_with_a_key_and_refuses_without(served: str) -> None:
    assert httpx.get(f"{served}/health").json() == {"status": "ok", "database": "ok"}
    listed = httpx.get(f"{served}/runs", headers={"X-API-Key": API_KEY})
    assert listed.status_code == 200
    assert set(listed.json()) == {"items", "next_cursor"}
    refused = httpx.get(f"{served}/runs")
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/json"


def test_the_served_openapi_documents_every_field(served: str) -> None:
    schema = httpx.get(f"{served}/openapi.json").json()
    for name in ("Run", "Node", "Artifact", "Event"):
        properties = schema["components"]["schemas"][name]["properties"]
        undocumented = [field for field, spec in properties.items() if "description" not in spec]
        assert undocumented == [], name


def test_the_seed_demo_call_runs_to_success_on_the_served_api(served: str) -> None:
    headers = {"X-API-Key": API_KEY}
    submitted = httpx.post(
        f"{served}/tasks", headers=headers, json={"title": "Demo", "task_spec": {"type": "demo"}}
    )
    assert submitted.status_code == 202
    run_url = f"{served}{submitted.headers['Location']}"
    deadline = time.monotonic() + 30
    while (run := httpx.get(run_url, headers=headers).json())["status"] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    assert run["status"] == "succeeded"
    artifacts = httpx.get(f"{run_url}/artifacts", headers=headers).json()["items"]
    report = httpx.get(f"{served}/artifacts/{artifacts[-1]['id']}/content", headers=headers)
    assert report.status_code == 200
    assert report.text.startswith("## ")
