"""The real entry point: `python -m apps.api` serving HTTP through uvicorn."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY
from tests.servers import api_process, free_port


@pytest.fixture
def served(migrated_database: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    with api_process(migrated_database, tmp_path, port):
        yield f"http://127.0.0.1:{port}"


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
    assert report.text.startswith("# Demo\n")
    assert report.text.count("## Write part") == 3
