"""Artifacts kept in an S3-compatible bucket (moto in server mode): written by the worker and by
operators' edits, served by the API from the bucket."""

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings, load_settings
from apps.orchestrator.infra.storage.s3 import CHUNK_BYTES
from apps.orchestrator.worker.loop import Worker
from tests.api.pages import error_detail
from tests.conftest import API_KEY
from tests.factories import create_artifact, create_node, create_run
from tests.orchestrator.driving import run_to_the_end
from tests.orchestrator.test_run_control import GATED_DAG
from tests.orchestrator.test_worker import SIDECARS, _submit
from tests.s3_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, bucket_keys, s3_client, s3_settings

PREFIX = "crew/test"


@pytest.fixture
def settings(settings: Settings, s3_endpoint: str, s3_bucket: str) -> Settings:
    """The session's settings, with the artifact store in a bucket of its own."""
    s3 = {name.lower(): value for name, value in s3_settings(s3_endpoint, s3_bucket).items()}
    return load_settings(**{**settings.model_dump(), **s3, "artifact_s3_prefix": PREFIX})


def _bucket(settings: Settings) -> tuple[Any, str]:
    assert settings.artifact_s3_endpoint_url and settings.artifact_s3_bucket
    return s3_client(settings.artifact_s3_endpoint_url), settings.artifact_s3_bucket


def _get_object(settings: Settings, storage_key: str) -> bytes:
    client, bucket = _bucket(settings)
    return client.get_object(Bucket=bucket, Key=f"{PREFIX}/{storage_key}")["Body"].read()


def _put_object(settings: Settings, storage_key: str, content: bytes) -> None:
    client, bucket = _bucket(settings)
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/{storage_key}", Body=content)


def _keys(settings: Settings) -> set[str]:
    assert settings.artifact_s3_endpoint_url and settings.artifact_s3_bucket
    keys = bucket_keys(settings.artifact_s3_endpoint_url, settings.artifact_s3_bucket)
    assert all(key.startswith(f"{PREFIX}/") for key in keys)
    return {key.removeprefix(f"{PREFIX}/") for key in keys}


async def _artifact_at(
    sessions: SessionFactory, settings: Settings, storage_key: str, content: bytes, **overrides: Any
) -> str:
    """An artifact row whose content is (or would be) the object under `storage_key`."""
    async with unit_of_work(sessions) as session:
        node = await create_node(session, await create_run(session))
        artifact = await create_artifact(
            session, node, settings.artifacts_dir, content, storage_key=storage_key, **overrides
        )
    return str(artifact.id)


def _attempt_key(run_id: str, artifact: dict[str, Any]) -> str:
    """Where the attempt that produced `artifact` wrote it."""
    return f"{run_id}/{artifact['sidecar']['attempt']}/{artifact['name']}"


async def test_a_demo_run_keeps_artifacts_and_sidecars_in_the_bucket_and_is_served_from_it(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    run_id = await _submit(client, {"type": "demo"})

    await Worker(transactions, settings).drain()

    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    assert len(artifacts) == 6
    keys = {_attempt_key(run_id, artifact) for artifact in artifacts}
    assert _keys(settings) == keys | {f"{key}.sidecar.json" for key in keys}
    for artifact in artifacts:
        key = _attempt_key(run_id, artifact)
        sidecar = json.loads(_get_object(settings, f"{key}.sidecar.json"))
        SIDECARS.validate(sidecar)
        assert sidecar == (await client.get(f"/artifacts/{artifact['id']}")).json()["sidecar"]
        assert artifact["sidecar"] == {k: v for k, v in sidecar.items() if k != "prompts"}
        content = await client.get(f"/artifacts/{artifact['id']}/content")
        assert content.status_code == 200
        assert content.content == _get_object(settings, key)
        assert content.headers["content-type"].split(";")[0] == artifact["media_type"]
    assert not settings.artifacts_dir.exists()


async def test_content_is_what_the_bucket_holds_when_asked(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    _put_object(settings, "run/node/draft.md", b"# First\n")
    artifact_id = await _artifact_at(sessions, settings, "run/node/draft.md", b"# First\n")
    assert (await client.get(f"/artifacts/{artifact_id}/content")).content == b"# First\n"

    _put_object(settings, "run/node/draft.md", b"# Second\n")

    assert (await client.get(f"/artifacts/{artifact_id}/content")).content == b"# Second\n"


async def _get_as_messages(app: FastAPI, path: str) -> list[dict[str, Any]]:
    """The ASGI messages `app` sends answering GET `path`: what a server would write out."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"x-api-key", API_KEY.encode())],
        "server": ("test", 80),
        "client": ("127.0.0.1", 50000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_big_content_is_streamed_in_chunks_with_its_length_and_media_type(
    app: FastAPI, sessions: SessionFactory, settings: Settings
) -> None:
    content = json.dumps({"rows": ["x" * 1000] * (4 * CHUNK_BYTES // 1000)}).encode()
    _put_object(settings, "run/node/données.json", content)
    artifact_id = await _artifact_at(
        sessions,
        settings,
        "run/node/données.json",
        content,
        name="données.json",
        media_type="application/json",
    )

    start, *body = await _get_as_messages(app, f"/artifacts/{artifact_id}/content")

    assert start["status"] == 200
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(content))
    assert headers["content-disposition"] == "inline; filename*=utf-8''donn%C3%A9es.json"
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]
    chunks = [message["body"] for message in body]
    assert len(chunks) >= 4
    assert max(len(chunk) for chunk in chunks) <= CHUNK_BYTES
    assert b"".join(chunks) == content


async def test_a_missing_object_is_a_404_in_json(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    artifact_id = await _artifact_at(sessions, settings, "run/node/never-written.md", b"")

    detail = await error_detail(client, f"/artifacts/{artifact_id}/content", 404)

    assert "missing" in detail


@pytest.mark.parametrize("key", ["../outside.md", "/crew/outside.md", "run/../../outside.md"])
async def test_a_key_leaving_the_prefix_is_a_404_and_leaks_nothing(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings, key: str
) -> None:
    client_s3, bucket = _bucket(settings)
    client_s3.put_object(Bucket=bucket, Key="crew/outside.md", Body=b"not for you")
    artifact_id = await _artifact_at(sessions, settings, key, b"")

    response = await client.get(f"/artifacts/{artifact_id}/content")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "not for you" not in response.text


async def test_a_bucket_that_is_gone_is_a_503_in_json(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    artifact_id = await _artifact_at(sessions, settings, "run/node/draft.md", b"")
    client_s3, bucket = _bucket(settings)
    client_s3.delete_bucket(Bucket=bucket)

    detail = await error_detail(client, f"/artifacts/{artifact_id}/content", 503)

    assert "NoSuchBucket" in detail


async def test_nodes_whose_output_cannot_be_stored_are_retried_then_fail_the_run_saying_why(
    transactions: Transactions,
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    client_s3, bucket = _bucket(settings)
    client_s3.delete_bucket(Bucket=bucket)
    run_id = await _submit(client, {"type": "demo"})

    run = await run_to_the_end(Worker(transactions, settings), sessions, client, run_id)

    assert run["status"] == "failed"
    assert "NoSuchBucket" in run["error"]
    events = (await client.get("/events", params={"run_id": run_id, "limit": 200})).json()
    retries = [e for e in events["items"] if e["type"] == "node.retrying"]
    assert retries
    assert {e["data"]["cause"] for e in retries} == {"artifact_store"}


async def test_an_approved_patch_is_stored_in_the_bucket_beside_its_sidecar(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    run_id = await _submit(client, GATED_DAG)
    await Worker(transactions, settings).drain()

    response = await client.post(f"/runs/{run_id}/approve", json={"patch": "# Edited draft\n"})
    assert response.status_code == 200, response.text
    await Worker(transactions, settings).drain()

    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    original, edited = [a for a in artifacts if a["name"] == "draft.md"]
    (edited_key,) = [key for key in _keys(settings) if "/edited-" in key and key.endswith(".md")]
    assert _get_object(settings, edited_key) == b"# Edited draft\n"
    original_sidecar = (await client.get(f"/artifacts/{original['id']}")).json()["sidecar"]
    assert json.loads(_get_object(settings, f"{edited_key}.sidecar.json")) == original_sidecar
    served = await client.get(f"/artifacts/{edited['id']}/content")
    assert served.content == b"# Edited draft\n"
    final = next(a for a in artifacts if a["name"] == "final.md")
    assert "# Edited draft" in (await client.get(f"/artifacts/{final['id']}/content")).text


async def test_the_buckets_credentials_are_redacted_from_the_effective_config(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/config/operator")

    assert ACCESS_KEY_ID not in response.text
    assert SECRET_ACCESS_KEY not in response.text
    effective = response.json()["settings"]
    assert effective["artifact_s3_access_key_id"] == "**********"
    assert effective["artifact_s3_secret_access_key"] == "**********"
    assert effective["artifact_store"] == "s3"
    assert effective["artifact_s3_bucket"] == settings.artifact_s3_bucket
    assert effective["artifact_s3_endpoint_url"] == settings.artifact_s3_endpoint_url
