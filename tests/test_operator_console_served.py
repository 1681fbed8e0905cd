"""The Operator Console document's quick start on real processes: `python3 run_server.py` migrates
and serves on the operator file's port, where its user's calls succeed; `python3 test_api.py`
runs the suite as `make test-api` does."""

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, process_env
from tests.servers import free_port

ADMIN_TOKEN = "quick-start-token"


@pytest.fixture
def run_server(empty_database: str, tmp_path: Path) -> Iterator[str]:
    """`python3 run_server.py` on an unmigrated database, its port from an operator file."""
    port = free_port()
    config = tmp_path / "operator.yaml"
    config.write_text(
        (ROOT / "conf" / "operator.yaml").read_text().replace("port: 8008", f"port: {port}")
    )
    env = process_env(
        OPERATOR_CONFIG=str(config),
        DATABASE_URL=empty_database,
        ARTIFACTS_DIR=str(tmp_path / "artifacts"),
        ADMIN_TOKEN=ADMIN_TOKEN,
        DEMO_LATENCY_MS="0",
    )
    log = tmp_path / "run_server.log"
    with (
        log.open("ab") as output,
        subprocess.Popen(
            [sys.executable, str(ROOT / "run_server.py")],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=output,
        ) as server,
    ):
        base = f"http://127.0.0.1:{port}/api/v1"
        try:
            _wait_until_healthy(f"{base}/healthz", server, log)
            yield base
        finally:
            server.terminate()


def _wait_until_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"run_server.py did not come up within 60 s:\n{log.read_text()}")


def test_the_quick_start_runs_as_written(run_server: str) -> None:
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    health = httpx.get(f"{run_server}/healthz")
    refused = httpx.get(f"{run_server}/jobs")
    job = httpx.post(
        f"{run_server}/jobs", json={"title": "Smoke", "task_spec": {"type": "demo"}}, headers=bearer
    ).json()
    deadline = time.monotonic() + 30
    while (
        status := httpx.get(f"{run_server}/jobs/{job['id']}", headers=bearer).json()["status"]
    ) in (
        "queued",
        "running",
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
    listed = httpx.get(f"{run_server}/jobs", headers=bearer).json()
    stream = httpx.get(f"{run_server}/jobs/{job['id']}/events/stream", headers=bearer)

    assert health.json() == {"status": "ok", "database": "ok"}
    assert refused.status_code == 401
    assert status == "succeeded"
    assert [item["id"] for item in listed["items"]] == [job["id"]]
    assert "event: run.succeeded" in stream.text


def test_test_api_py_runs_the_suite_with_pytest_arguments(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "test_api.py"), "--collect-only", "-q", "tests/core"],
        cwd=tmp_path,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "tests/core/test_operator_file.py::" in result.stdout
