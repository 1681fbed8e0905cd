"""The Operator Console document's API: /api/v1 before every path, jobs as names for runs, its
ADMIN_TOKEN as an admin key, and what a new user of it ran into."""

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from apps.api.aliases import job_routes
from apps.api.app import create_app
from apps.core.settings import Settings, load_settings
from apps.orchestrator.worker.loop import Worker
from tests.conftest import API_KEY, empty_tables
from tests.sse import parse_sse

ADMIN_TOKEN = "operator-console-token"
YAML = {"Content-Type": "application/yaml"}
OPERATOR_FILE = (Path(__file__).resolve().parents[2] / "conf" / "operator.yaml").read_bytes()
DEMO = {"title": "Smoke", "task_spec": {"type": "demo"}}
GATED = {
    "title": "Gated",
    "task_spec": {
        "type": "dag",
        "nodes": [
            {"key": "draft", "role": "writer", "prompt": "Draft it.", "gate": {}},
            {"key": "final", "role": "assembler", "prompt": "Assemble.", "deps": ["draft"]},
        ],
    },
}


@pytest.fixture
async def console_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with both admin keys of the settings: API_KEY and the ADMIN_TOKEN."""
    application = create_app(settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN)}))
    async with application.router.lifespan_context(application):
        try:
            yield application
        finally:
            await empty_tables(application.state.sessions)


@pytest.fixture
async def console(console_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client as the document's user: the ADMIN_TOKEN as a bearer token, paths under /api/v1."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=console_app),
        base_url="http://test/api/v1",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as http:
        yield http


async def _job(console: httpx.AsyncClient, body: dict[str, Any] = DEMO) -> dict[str, Any]:
    response = await console.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _worker(app: FastAPI) -> Worker:
    return Worker(app.state.transactions, app.state.settings)


async def test_healthz_under_api_v1_needs_no_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/healthz", headers={"X-API-Key": ""})

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


async def test_every_route_answers_under_api_v1_as_at_the_root(app: FastAPI) -> None:
    """Without a key: the same status at both paths, so the same auth guards both."""
    paths = app.openapi()["paths"]
    some_id = str(uuid.uuid4())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as anonymous:
        for path, operations in paths.items():
            concrete = path.replace("{run_id}", some_id).replace("{node_id}", some_id)
            concrete = concrete.replace("{artifact_id}", some_id)
            for method in operations:
                root = await anonymous.request(method, concrete)
                aliased = await anonymous.request(method, f"/api/v1{concrete}")
                assert (method, path, aliased.status_code) == (method, path, root.status_code)
                assert root.status_code in (200, 401), (method, path, root.text)


async def test_under_api_v1_a_request_keeps_its_path(client: httpx.AsyncClient) -> None:
    """Its redirects stay under the prefix, an unknown method names the methods served there,
    and the document fetched there names it as its server (its paths are the same)."""
    slash = await client.get("/api/v1/runs/", headers={"X-API-Key": API_KEY})
    assert slash.status_code == 307
    assert slash.headers["location"] == "http://test/api/v1/runs"
    wrong = await client.delete("/api/v1/keys", headers={"X-API-Key": API_KEY})
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, POST"
    root, aliased = await client.get("/openapi.json"), await client.get("/api/v1/openapi.json")
    assert "servers" not in root.json()
    assert aliased.json()["servers"] == [{"url": "/api/v1"}]
    assert aliased.json()["paths"] == root.json()["paths"]
    prefixed_twice = await client.get("/api/v1/api/v1/runs", headers={"X-API-Key": API_KEY})
    assert prefixed_twice.status_code == 404


async def test_the_admin_token_is_an_admin_key_by_bearer_or_header(
    console_app: FastAPI,
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=console_app), base_url="http://test"
    ) as http:
        for headers in (
            {"Authorization": f"Bearer {ADMIN_TOKEN}"},
            {"X-API-Key": ADMIN_TOKEN},
            {"X-API-Key": API_KEY},
        ):
            response = await http.post("/api/v1/jobs", json=DEMO, headers=headers)
            assert response.status_code == 202, (headers, response.text)
        wrong = await http.get("/api/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        created_by = {
            item["created_by"]
            for item in (await http.get("/jobs", headers={"X-API-Key": API_KEY})).json()["items"]
        }
    assert created_by == {"admin", "admin-token"}


async def test_post_jobs_answers_as_post_tasks(console: httpx.AsyncClient) -> None:
    response = await console.post("/jobs", json=DEMO)
    task = await console.post("/tasks", json=DEMO)

    assert response.status_code == task.status_code == 202
    assert response.json().keys() == task.json().keys()
    assert response.headers["Location"] == f"/runs/{response.json()['id']}"
    assert response.json()["task_spec"]["type"] == "demo"


async def test_a_job_is_read_listed_and_followed_as_its_run(
    console: httpx.AsyncClient, console_app: FastAPI
) -> None:
    job = await _job(console)
    await _worker(console_app).drain()

    listed = (await console.get("/jobs")).json()
    one = (await console.get(f"/jobs/{job['id']}")).json()
    run = (await console.get(f"/runs/{job['id']}")).json()
    events = (await console.get(f"/jobs/{job['id']}/events")).json()
    run_events = (await console.get(f"/runs/{job['id']}/events")).json()
    polled = (await console.get("/events", params={"run_id": job["id"]})).json()
    artifacts = (await console.get(f"/jobs/{job['id']}/artifacts")).json()
    stream = await console.get(f"/jobs/{job['id']}/events/stream")

    assert [item["id"] for item in listed["items"]] == [job["id"]]
    assert one == run
    assert one["status"] == "succeeded"
    assert events == run_events == polled
    assert events["items"][-1]["type"] == "run.succeeded"
    assert artifacts == (await console.get(f"/runs/{job['id']}/artifacts")).json()
    assert artifacts["items"]
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert parse_sse(stream.text).events == events["items"]


async def test_job_events_poll_with_after_and_cursor(
    console: httpx.AsyncClient, console_app: FastAPI
) -> None:
    job = await _job(console)
    await _worker(console_app).drain()
    every = (await console.get(f"/jobs/{job['id']}/events")).json()["items"]

    first = (await console.get(f"/jobs/{job['id']}/events", params={"limit": 2})).json()
    rest = await console.get(f"/jobs/{job['id']}/events", params={"cursor": first["next_cursor"]})
    after = await console.get(f"/jobs/{job['id']}/events", params={"after": every[1]["id"]})

    assert first["items"] + rest.json()["items"] == every
    assert after.json()["items"] == every[2:]


async def test_empty_bodies_approve_and_retry_a_jobs_gate(
    console: httpx.AsyncClient, console_app: FastAPI
) -> None:
    job = await _job(console, GATED)
    await _worker(console_app).drain()

    rejected = await console.post(f"/jobs/{job['id']}/reject")
    await _worker(console_app).drain()
    approved = await console.post(f"/jobs/{job['id']}/approve")
    await _worker(console_app).drain()

    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["action"], rejected.json()["notes"]) == ("retry", None)
    assert rejected.json()["decided_by"] == "admin-token"
    assert approved.status_code == 200, approved.text
    assert (approved.json()["action"], approved.json()["notes"]) == ("approve", None)
    assert (await console.get(f"/jobs/{job['id']}")).json()["status"] == "succeeded"


async def test_a_body_that_is_not_a_decision_is_still_a_422(
    console: httpx.AsyncClient, console_app: FastAPI
) -> None:
    job = await _job(console, GATED)
    await _worker(console_app).drain()

    response = await console.post(f"/jobs/{job['id']}/reject", json={"action": "maybe"})

    assert response.status_code == 422


async def test_a_decision_not_sent_as_json_is_a_415_and_the_gate_still_waits(
    console: httpx.AsyncClient, console_app: FastAPI
) -> None:
    job = await _job(console, GATED)
    await _worker(console_app).drain()
    notes = b'{"notes": "looks fine"}'

    as_text = await console.post(
        f"/jobs/{job['id']}/approve", content=notes, headers={"Content-Type": "text/plain"}
    )
    untyped = await console.post(f"/jobs/{job['id']}/approve", content=notes)
    gates = await console.get("/gates", params={"run_id": job["id"]})
    typed = await console.post(
        f"/jobs/{job['id']}/approve",
        content=notes,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert (as_text.status_code, untyped.status_code) == (415, 415), as_text.text
    assert "Content-Type: application/json" in as_text.json()["detail"]
    assert [gate["status"] for gate in gates.json()["items"]] == ["pending"]
    assert typed.status_code == 200, typed.text
    assert typed.json()["notes"] == "looks fine"


async def test_a_job_is_cancelled_and_resumed(
    console: httpx.AsyncClient, console_app: FastAPI
) -> None:
    job = await _job(console)

    cancelled = await console.post(f"/jobs/{job['id']}/cancel")
    await _worker(console_app).drain()
    stopped = (await console.get(f"/jobs/{job['id']}")).json()["status"]
    resumed = await console.post(f"/jobs/{job['id']}/resume")
    await _worker(console_app).drain()

    assert cancelled.status_code == 202, cancelled.text
    assert stopped == "cancelled"
    assert resumed.status_code == 202, resumed.text
    assert (await console.get(f"/jobs/{job['id']}")).json()["status"] == "succeeded"


async def test_an_unknown_job_is_a_404(console: httpx.AsyncClient) -> None:
    response = await console.get(f"/jobs/{uuid.uuid4()}")

    assert response.status_code == 404
    assert response.json()["detail"]


async def test_openapi_shows_the_jobs_once_under_their_tag_and_no_api_v1_copy(
    app: FastAPI,
) -> None:
    paths = app.openapi()["paths"]
    job_operations = [
        (method, path, operation)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if path.startswith("/jobs")
    ]

    assert not [path for path in paths if path.startswith("/api/v1")]
    assert len(job_operations) == 10
    assert all(operation["tags"] == ["jobs"] for _, _, operation in job_operations)
    original = paths["/runs/{run_id}/cancel"]["post"]
    alias = paths["/jobs/{run_id}/cancel"]["post"]
    assert alias["responses"] == original["responses"]
    assert alias["operationId"] != original["operationId"]


async def test_health_ignores_a_bad_time_zone(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/healthz", "/api/v1/healthz"):
        response = await client.get(path, headers={"X-Timezone": "Mars/Olympus"})
        assert response.status_code == 200, (path, response.text)


async def test_a_bad_time_zone_is_still_a_400_where_timestamps_are_returned(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/runs", headers={"X-Timezone": "Mars/Olympus"})

    assert response.status_code == 400
    assert "Mars/Olympus" in response.json()["detail"]


async def test_metrics_ignore_a_bad_time_zone_and_are_served_under_api_v1(
    settings: Settings,
) -> None:
    application = create_app(settings.model_copy(update={"metrics_enabled": True}))
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://test"
        ) as http,
    ):
        for path in ("/metrics", "/api/v1/metrics"):
            response = await http.get(path, headers={"X-Timezone": "Mars/Olympus"})
            assert response.status_code == 200, (path, response.text)
            assert "crew_runs" in response.text
        await http.get("/api/v1/runs", headers={"X-API-Key": API_KEY})
        scraped = (await http.get("/metrics")).text
        await empty_tables(application.state.sessions)
    # Counted under the route's template, whichever path the request came by.
    assert 'method="GET",route="/runs",status="2xx"' in scraped


async def test_cors_follows_the_operator_files_security_section(
    settings: Settings, tmp_path: Path
) -> None:
    config = tmp_path / "operator.yaml"
    config.write_text(
        "security:\n  cors:\n    enabled: true\n    allow_origins: ['https://ops.example.com']\n"
    )
    from_file = load_settings(_env_file=None, operator_config=config)
    application = create_app(settings.model_copy(update={"cors_origins": from_file.cors_origins}))
    preflight = {
        "Origin": "https://ops.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://test"
    ) as http:
        allowed = await http.options("/api/v1/jobs", headers=preflight)
        other = await http.options(
            "/api/v1/jobs", headers={**preflight, "Origin": "https://evil.example.com"}
        )

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://ops.example.com"
    assert "access-control-allow-origin" not in other.headers


async def test_the_repositorys_operator_file_validates_clean(console: httpx.AsyncClient) -> None:
    response = await console.post("/config/validate", content=OPERATOR_FILE, headers=YAML)

    assert response.status_code == 200, response.text
    assert (response.json()["valid"], response.json()["kind"]) == (True, "gate_policy")
    assert (response.json()["problems"], response.json()["notes"]) == ([], [])


async def test_validating_an_operator_file_checks_its_settings_and_names_unused_keys(
    console: httpx.AsyncClient,
) -> None:
    body = b"server:\n  port: eighty\n  workers: 2\npipeline: {}\n"
    unused = b"server:\n  port: 8008\n  workers: 2\npipeline: {}\n"

    bad = (await console.post("/config/validate", content=body, headers=YAML)).json()
    odd = (await console.post("/config/validate", content=unused, headers=YAML)).json()

    assert bad["valid"] is False
    assert [problem["location"] for problem in bad["problems"]] == ["server.port"]
    assert (odd["valid"], odd["problems"]) == (True, [])
    assert odd["notes"] == ["not used, ignored: pipeline, server.workers"]


def test_a_job_alias_of_a_route_that_is_gone_stops_start_up() -> None:
    with pytest.raises(RuntimeError, match=re.escape("/runs/{run_id}/approve")):
        job_routes([])
