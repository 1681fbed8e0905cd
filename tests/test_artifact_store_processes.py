"""An API process serves what a standalone worker process wrote, each in a working directory of
its own: the artifact store they share is an absolute ARTIFACTS_DIR, or a bucket."""

import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY
from tests.s3_server import bucket_keys, create_bucket, s3_client, s3_settings
from tests.servers import api_process, free_port, worker_process

HEADERS = {"X-API-Key": API_KEY}


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The settings of the store both processes are given."""
    if request.param == "local":
        return {"ARTIFACT_STORE": "local", "ARTIFACTS_DIR": str(tmp_path / "shared-artifacts")}
    endpoint = request.getfixturevalue("s3_endpoint")
    return s3_settings(endpoint, create_bucket(endpoint), prefix="crew")


def _finished_run(base: str, run_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = httpx.get(f"{base}/runs/{run_id}", headers=HEADERS).json()
        if run["status"] in ("succeeded", "failed"):
            return run
        time.sleep(0.1)
    raise AssertionError("the run did not finish within 60 s")


def _stored_sidecars(store: dict[str, str], run_id: str) -> list[dict]:
    """The sidecars of the run's artifacts as the store holds them."""
    if store["ARTIFACT_STORE"] == "local":
        paths = Path(store["ARTIFACTS_DIR"]).glob(f"{run_id}/*/*.sidecar.json")
        return [json.loads(path.read_text()) for path in paths]
    endpoint, bucket = store["ARTIFACT_S3_ENDPOINT_URL"], store["ARTIFACT_S3_BUCKET"]
    keys = bucket_keys(endpoint, bucket)
    assert all(key.startswith(f"crew/{run_id}/") for key in keys)
    return [
        json.loads(s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())
        for key in keys
        if key.endswith(".sidecar.json")
    ]


def test_an_api_process_serves_what_a_worker_process_in_another_directory_wrote(
    migrated_database: str, tmp_path: Path, store: dict[str, str]
) -> None:
    api_dir, worker_dir = tmp_path / "api", tmp_path / "worker"
    api_dir.mkdir()
    worker_dir.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = {**store, "DEMO_LATENCY_MS": "0"}

    with (
        api_process(migrated_database, api_dir, port, WORKER_IN_API="0", **settings),
        worker_process(migrated_database, worker_dir, "standalone", **settings),
    ):
        body = {"title": "Across processes", "task_spec": {"type": "demo"}}
        run_id = httpx.post(f"{base}/tasks", json=body, headers=HEADERS).json()["id"]
        run = _finished_run(base, run_id)
        artifacts = httpx.get(f"{base}/runs/{run_id}/artifacts", headers=HEADERS).json()["items"]
        served = [
            httpx.get(f"{base}/artifacts/{artifact['id']}/content", headers=HEADERS)
            for artifact in artifacts
        ]

    assert run["status"] == "succeeded", run["error"]
    assert len(artifacts) == 6
    for artifact, content in zip(artifacts, served, strict=True):
        assert content.status_code == 200
        assert hashlib.sha256(content.content).hexdigest() == artifact["sha256"]
    sidecars = _stored_sidecars(store, run_id)
    assert len(sidecars) == 6
    assert all(sidecar["run_id"] == run_id for sidecar in sidecars)
    assert not (api_dir / "artifacts").exists()
    assert not (worker_dir / "artifacts").exists()
