"""GET /sentry-debug: an admin's way to see an error reach Sentry; it fails on purpose, tagged."""

from pathlib import Path

import httpx
from fastapi import FastAPI

from apps.orchestrator.model.models import KeyRole
from tests.api.test_auth import _key
from tests.conftest import API_KEY
from tests.sentry_sink import sentry_sink
from tests.servers import api_process, free_port


async def test_only_an_admin_may_trigger_it(client: httpx.AsyncClient, app: FastAPI) -> None:
    operator = await _key(app.state.sessions, KeyRole.OPERATOR)

    refused = await client.get("/api/v1/sentry-debug", headers={"X-API-Key": operator})
    anonymous = await client.get("/sentry-debug", headers={"X-API-Key": ""})

    assert refused.status_code == 403
    assert "admin" in refused.json()["detail"]
    assert anonymous.status_code == 401


async def test_with_no_dsn_it_is_a_json_500(app: FastAPI) -> None:
    # As a server answers it: the error is not raised into the client, as ASGITransport would.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/sentry-debug", headers={"X-API-Key": API_KEY})

    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}


def test_its_error_arrives_at_sentry_tagged(migrated_database: str, tmp_path: Path) -> None:
    """Asked for under `/api/v1`: the event, the error's log line and the access log show the
    path the client sent, and the event names the route it matched."""
    port = free_port()
    with (
        sentry_sink() as (sink, dsn),
        api_process(migrated_database, tmp_path, port, SENTRY_DSN=dsn, SENTRY_ENV="check"),
    ):
        answer = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/sentry-debug",
            headers={"X-API-Key": API_KEY, "X-Request-ID": "sentry-check-1"},
        )
        [event] = sink.wait_for_events(1)
        received = b"".join(sink.bodies).decode()

    assert answer.status_code == 500
    assert event["tags"]["crew_check"] == "sentry"
    assert event["tags"]["key_name"] == "admin"
    assert event["tags"]["request_id"] == "sentry-check-1"
    assert event["environment"] == "check"
    assert event["exception"]["values"][-1]["type"] == "SentryCheckError"
    assert event["request"]["url"] == f"http://127.0.0.1:{port}/api/v1/sentry-debug"
    assert event["transaction"] == "/sentry-debug"
    assert API_KEY not in received
    log = (tmp_path / f"server-{port}.log").read_text()
    assert "unhandled error on GET /api/v1/sentry-debug" in log
    assert '"GET /api/v1/sentry-debug HTTP/1.1" 500' in log
