import asyncio
import re
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import event, select, update

from apps.api.app import create_app
from apps.api.auth import AdminCaller
from apps.api.reference import FILES_URL
from apps.core.database import SessionFactory, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.control import api_keys
from apps.orchestrator.model.models import ApiKey, KeyRole, utcnow
from tests.conftest import API_KEY, ROOT

# The API reference's pages and the files they load (a mount: every path under FILES_URL).
API_REFERENCE = {
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/redoc/logo-mini.svg",
    FILES_URL,
    "/openapi.json",
}
PUBLIC_PATHS = {"/health", "/healthz", *API_REFERENCE}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


def _is_console(path: str) -> bool:
    # The web console's pages sign in with a session instead (tests/console/test_sessions.py).
    return path == "/" or path.startswith("/ui/")


def _protected_requests(app: FastAPI) -> list[tuple[str, str]]:
    # app.routes holds included routers as wrappers; iter_route_contexts walks into them.
    return [
        (method, _concrete(route.path))
        for route in iter_route_contexts(app.routes)
        if route.path not in PUBLIC_PATHS and not _is_console(route.path)
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
    swagger_ui = f"{FILES_URL}/swagger/swagger-ui-bundle.js"
    for path in ("/health", "/healthz", "/openapi.json", "/docs", "/redoc", swagger_ui):
        response = await client.get(path, headers={"X-API-Key": ""})
        assert response.status_code == 200, path


async def test_the_api_reference_can_be_turned_off(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"api_docs_enabled": False}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for headers in ({}, {"X-API-Key": API_KEY}):
                for path in (*API_REFERENCE, f"{FILES_URL}/swagger/swagger-ui-bundle.js"):
                    response = await client.get(path, headers=headers)
                    assert response.status_code == 404, path
            assert (await client.get("/health")).status_code == 200


def test_the_readme_names_every_route_that_needs_no_key() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The API") :]
    rule = " ".join(section[: section.index("needs a key")].split())
    for path in ("/health", "/healthz", "/metrics", "/docs", "/redoc", "/openapi.json"):
        assert f"`{path}`" in rule, path
    assert "API_DOCS_ENABLED" in rule
    assert "METRICS_ENABLED" in rule


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


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "test-key "},
        {"X-API-Key": "\ttest-key"},
        {"Authorization": "Bearer test-key "},
    ],
)
async def test_whitespace_around_a_key_is_not_part_of_it(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/runs", headers={"X-API-Key": "", **headers})
    assert response.status_code == 200, response.text


async def test_a_key_named_as_a_gates_timeout_is_refused(client: httpx.AsyncClient) -> None:
    # Decisions a gate's timeout makes are recorded as decided by "timeout".
    for name in ("timeout", "Timeout"):
        response = await client.post("/keys", json={"name": name, "role": "operator"})
        assert response.status_code == 422
        assert response.json()["detail"] == (
            f"the name {name!r} is kept for the decisions of gates that time out"
        )
    assert all(
        key["name"].casefold() != "timeout" for key in (await client.get("/keys")).json()["items"]
    )


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


# --- keys from the database, and roles ------------------------------------------------------------

TASK = {"title": "Demo", "task_spec": {"type": "demo"}}


async def _key(sessions: SessionFactory, role: KeyRole, name: str | None = None) -> str:
    async with unit_of_work(sessions) as session:
        created = await api_keys.create_key(session, name or f"{role}-key", role)
    return created.secret


async def test_a_viewer_may_read(client: httpx.AsyncClient, sessions: SessionFactory) -> None:
    run = (await client.post("/tasks", json=TASK)).json()
    viewer = {"X-API-Key": await _key(sessions, KeyRole.VIEWER)}

    for path in (
        "/runs",
        f"/runs/{run['id']}",
        f"/runs/{run['id']}/nodes",
        "/events",
        "/artifacts",
    ):
        response = await client.get(path, headers=viewer)
        assert response.status_code == 200, (path, response.text)


async def test_a_viewer_may_not_submit_a_task(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    viewer = {"X-API-Key": await _key(sessions, KeyRole.VIEWER, name="bob")}

    response = await client.post("/tasks", json=TASK, headers=viewer)

    assert response.status_code == 403
    assert response.json() == {
        "detail": "this needs the operator or admin role; the key 'bob' has the viewer role"
    }
    assert (await client.get("/runs")).json()["items"] == []


@pytest.mark.parametrize("role", [KeyRole.OPERATOR, KeyRole.ADMIN])
async def test_an_operator_or_admin_key_submits_tasks_under_its_name(
    client: httpx.AsyncClient, sessions: SessionFactory, role: KeyRole
) -> None:
    key = await _key(sessions, role, name="alice")

    response = await client.post(
        "/tasks", json=TASK, headers={"X-API-Key": "", "Authorization": f"Bearer {key}"}
    )

    assert response.status_code == 202, response.text
    assert response.json()["created_by"] == "alice"


async def test_the_api_key_setting_submits_as_admin(client: httpx.AsyncClient) -> None:
    response = await client.post("/tasks", json=TASK)

    assert response.status_code == 202
    assert response.json()["created_by"] == "admin"


def _add_admin_route(app: FastAPI) -> None:
    async def admin_only(caller: AdminCaller) -> dict[str, str]:
        return {"name": caller.name}

    app.add_api_route("/test/admin", admin_only, methods=["POST"])


async def test_an_admin_route_refuses_an_operator_and_serves_an_admin(
    app: FastAPI, client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    _add_admin_route(app)
    operator = {"X-API-Key": await _key(sessions, KeyRole.OPERATOR, name="alice")}
    admin = {"X-API-Key": await _key(sessions, KeyRole.ADMIN, name="root")}

    refused = await client.post("/test/admin", headers=operator)
    served = await client.post("/test/admin", headers=admin)

    assert refused.status_code == 403
    assert refused.json() == {
        "detail": "this needs the admin role; the key 'alice' has the operator role"
    }
    assert (served.status_code, served.json()) == (200, {"name": "root"})


async def test_a_revoked_key_is_refused_at_the_very_next_request(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    operator = {"X-API-Key": await _key(sessions, KeyRole.OPERATOR, name="alice")}
    assert (await client.get("/runs", headers=operator)).status_code == 200

    async with unit_of_work(sessions) as session:
        await api_keys.revoke_key(session, "alice")
    response = await client.get("/runs", headers=operator)

    assert response.status_code == 401
    assert response.json() == {"detail": "invalid API key"}


async def _last_use(sessions: SessionFactory, name: str) -> datetime | None:
    async with sessions() as session:
        return await session.scalar(select(ApiKey.last_used_at).where(ApiKey.name == name))


async def test_a_keys_last_use_is_recorded_once_a_minute_at_most(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    viewer = {"X-API-Key": await _key(sessions, KeyRole.VIEWER, name="bob")}
    before = utcnow()

    await client.get("/runs", headers=viewer)
    first = await _last_use(sessions, "bob")
    await client.get("/runs", headers=viewer)
    assert first is not None and before <= first <= utcnow()
    assert await _last_use(sessions, "bob") == first

    async with unit_of_work(sessions) as session:
        await session.execute(update(ApiKey).values(last_used_at=first - timedelta(minutes=2)))
    await client.get("/runs", headers=viewer)
    assert await _last_use(sessions, "bob") >= first


def _count_statements(app: FastAPI) -> list[str]:
    statements: list[str] = []

    def record(_conn, _cursor, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(app.state.engine.sync_engine, "before_cursor_execute", record)
    return statements


async def test_a_read_costs_one_key_lookup_and_the_setting_key_none(
    app: FastAPI, client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    viewer = {"X-API-Key": await _key(sessions, KeyRole.VIEWER)}
    await client.get("/gates", headers=viewer)  # records the first use
    statements = _count_statements(app)

    # A list read through SQLAlchemy (the runs and events lists call their driver directly,
    # unseen here).
    assert (await client.get("/gates")).status_code == 200
    setting_key = len(statements)
    assert (await client.get("/gates", headers=viewer)).status_code == 200
    stored_key = statements[setting_key:]

    assert setting_key == 1
    assert len(stored_key) == 2
    assert "api_keys" in stored_key[0] and "key_hash" in stored_key[0]


class TestOnOneConnection:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0})

    async def test_a_stored_key_never_holds_two_connections_at_once(
        self, client: httpx.AsyncClient, sessions: SessionFactory
    ) -> None:
        operator = {"X-API-Key": await _key(sessions, KeyRole.OPERATOR)}
        reads = [client.get("/runs", headers=operator) for _ in range(8)]
        writes = [client.post("/tasks", json=TASK, headers=operator) for _ in range(2)]

        responses = await asyncio.wait_for(asyncio.gather(*reads, *writes), timeout=10)

        assert [response.status_code for response in responses] == [200] * 8 + [202] * 2


async def test_the_openapi_page_documents_roles_and_the_403(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()

    assert "`operator`" in schema["info"]["description"]
    forbidden = schema["paths"]["/tasks"]["post"]["responses"]["403"]["description"]
    assert "operator or admin" in forbidden
