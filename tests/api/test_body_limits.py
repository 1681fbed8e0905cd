"""Bodies are read only once the key is known, and only up to each route's limit: a 413 in JSON,
stated in the OpenAPI document. Memory under a real uvicorn is in test_body_limits_served.py."""

import asyncio
import gzip
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from apps.api.routes.control import MAX_APPROVAL_BYTES
from apps.api.routes.tasks import MAX_TASK_BYTES
from apps.api.routing import DEFAULT_MAX_BODY_SIZE
from apps.core.database import unit_of_work
from apps.orchestrator.control import api_keys
from apps.orchestrator.control.configuration import MAX_DOCUMENT_BYTES
from apps.orchestrator.model.models import KeyRole
from tests.asgi import http_request
from tests.conftest import API_KEY

LIMITS = {
    "/tasks": MAX_TASK_BYTES,
    "/runs/{run_id}/approve": MAX_APPROVAL_BYTES,
    "/runs/{run_id}/reject": DEFAULT_MAX_BODY_SIZE,
    "/config/validate": MAX_DOCUMENT_BYTES,
}
CHUNK = b" " * 65536


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


async def _answer_to_a_large_body(
    app: FastAPI, path: str, headers: dict[str, str], size: int
) -> tuple[int, dict[str, Any], int]:
    """POST `path` with a body of about `size` bytes sent in chunks; the status, the JSON answer
    and the bytes the app asked for before it answered."""
    read = 0
    answer: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        nonlocal read
        if "status" in answer:
            await asyncio.Event().wait()  # the client keeps sending; the app stopped asking
        read += len(CHUNK)
        return {"type": "http.request", "body": CHUNK, "more_body": read < size}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    await asyncio.wait_for(app(http_request("POST", path, *_raw(headers)), receive, send), 30)
    return answer["status"], json.loads(answer["body"]), read


@pytest.mark.parametrize("path", ["/tasks", "/config/validate", "/runs/{run_id}/approve"])
@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"Content-Type": "application/json", "X-API-Key": "not-a-key"},
        {"Content-Type": "application/json", "Content-Length": str(200 * 1024 * 1024)},
    ],
    ids=["no key", "wrong key", "no key, 200 MB declared"],
)
async def test_no_byte_of_a_body_is_read_before_the_key_is_checked(
    app: FastAPI, path: str, headers: dict[str, str]
) -> None:
    status, answer, read = await _answer_to_a_large_body(
        app, path.format(run_id=uuid.uuid4()), headers, 8 * 1024 * 1024
    )

    assert status == 401
    assert answer["detail"] in (
        "missing API key: send X-API-Key or Authorization: Bearer",
        "invalid API key",
    )
    assert read == 0


@pytest.mark.parametrize(("path", "limit"), LIMITS.items())
async def test_a_body_past_its_routes_limit_is_a_413_in_json(
    app: FastAPI, client: httpx.AsyncClient, path: str, limit: int
) -> None:
    concrete = path.format(run_id=uuid.uuid4())
    key = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    declared = {**key, "Content-Length": str(limit + 1)}

    size = limit + 4 * len(CHUNK)
    declared_status, declared_answer, declared_read = await _answer_to_a_large_body(
        app, concrete, declared, size
    )
    streamed_status, streamed_answer, streamed_read = await _answer_to_a_large_body(
        app, concrete, key, size
    )

    assert (declared_status, streamed_status) == (413, 413)
    assert declared_read == 0
    assert limit < streamed_read <= limit + len(CHUNK)
    expected = f"the body is over this route's limit of {limit:,} bytes"
    assert declared_answer == streamed_answer == {"detail": expected}


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 65536):
        yield body[start : start + 65536]


async def test_a_task_just_under_its_limit_is_read_and_judged(client: httpx.AsyncClient) -> None:
    padding = " " * (MAX_TASK_BYTES - 200)
    body = f'{{"title": "Padded", "task_spec": {{"type": "demo"}}{padding}}}'.encode()
    assert len(body) <= MAX_TASK_BYTES

    response = await client.post(
        "/tasks", content=_chunks(body), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 202, response.text[:200]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "labelled only"])
async def test_a_compressed_body_is_a_415_that_says_so_and_writes_nothing(
    client: httpx.AsyncClient, encoding: str, compressed: bool
) -> None:
    body = json.dumps({"title": "Zipped", "task_spec": {"type": "demo"}}).encode()

    response = await client.post(
        "/tasks",
        content=gzip.compress(body) if compressed else body,
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )

    assert response.status_code == 415, response.text
    assert response.json() == {
        "detail": f"the body must be sent uncompressed: Content-Encoding {encoding!r} is not "
        "accepted"
    }
    assert (await client.get("/runs")).json()["items"] == []


async def test_a_body_sent_with_the_identity_coding_is_read(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/tasks",
        json={"title": "Plain", "task_spec": {"type": "demo"}},
        headers={"Content-Encoding": "identity"},
    )

    assert response.status_code == 202, response.text


async def test_the_openapi_document_states_every_limit_and_the_401(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    for path, limit in LIMITS.items():
        responses = paths[path]["post"]["responses"]
        assert responses["413"]["description"] == f"The body is over {limit:,} bytes."
    for path, operations in paths.items():
        if path not in ("/health", "/metrics"):
            for operation in operations.values():
                assert "401" in operation["responses"], path
    assert "413" not in paths["/runs/{run_id}/cancel"]["post"]["responses"]


async def test_a_key_whose_role_may_not_post_is_refused_before_its_body_is_read(
    app: FastAPI,
) -> None:
    async with unit_of_work(app.state.sessions) as session:
        viewer = (await api_keys.create_key(session, "reader", KeyRole.VIEWER)).secret
    headers = {"Content-Type": "application/json", "X-API-Key": viewer}

    status, answer, read = await _answer_to_a_large_body(app, "/tasks", headers, 8 * 1024 * 1024)

    assert (status, read) == (403, 0)
    assert answer["detail"].startswith("this needs the operator or admin role")
