import re
import uuid

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from apps.api.app import create_app
from apps.core.settings import Settings

PUBLIC_PATHS = {"/health", "/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


def _protected_requests(app: FastAPI) -> list[tuple[str, str]]:
    # app.routes holds included routers as wrappers; iter_route_contexts walks into them.
    return [
        (method, _concrete(route.path))
        for route in iter_route_contexts(app.routes)
        if route.path not in PUBLIC_PATHS
        for method in route.methods or ()
        if method != "HEAD"
    ]


async def test_every_route_but_health_and_docs_needs_a_key(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    requests = _protected_requests(app)
    assert len(requests) >= 9
    for method, path in requests:
        response = await client.request(method, path, headers={"X-API-Key": ""})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["detail"].startswith("missing API key")


async def test_public_paths_answer_without_a_key(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/healthz", "/openapi.json", "/docs"):
        response = await client.get(path, headers={"X-API-Key": ""})
        assert response.status_code == 200, path


async def test_a_wrong_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/runs", headers={"X-API-Key": "test-kez"})
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid API key"}
    assert "WWW-Authenticate" in response.headers


async def test_the_key_is_accepted_as_a_bearer_token(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/runs", headers={"X-API-Key": "", "Authorization": "Bearer test-key"}
    )
    assert response.status_code == 200


async def test_a_non_bearer_authorization_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/runs", headers={"X-API-Key": "", "Authorization": "Basic dGVzdC1rZXk6"}
    )
    assert response.status_code == 401


async def test_with_no_api_key_configured_every_key_is_refused(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"api_key": None}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/runs", headers={"X-API-Key": "test-key"})
    assert response.status_code == 401


@pytest.mark.parametrize("origins", [[], ["https://console.example.com"]])
async def test_cors_follows_cors_origins(settings: Settings, origins: list[str]) -> None:
    app = create_app(settings.model_copy(update={"cors_origins": origins}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.options(
                "/runs",
                headers={
                    "Origin": "https://console.example.com",
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "X-API-Key",
                },
            )
    allowed = response.headers.get("Access-Control-Allow-Origin")
    assert allowed == ("https://console.example.com" if origins else None)
