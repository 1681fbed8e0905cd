import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from apps.api.app import create_app
from apps.core.database import unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.control import api_keys
from apps.orchestrator.control.configuration import MAX_DOCUMENT_BYTES
from apps.orchestrator.model.models import KeyRole
from tests.conftest import ROOT, empty_tables

ADMIN_KEY = "admin-key-Zq81vX0pLm"
SECRETS = {
    "api_key": ADMIN_KEY,
    "openai_api_key": "sk-live-7h3s3cr3tk3y",
    "sentry_dsn": "https://pubkey9f8e7d@o123.ingest.sentry.io/4567",
}
DATABASE_PASSWORD = "db-pass-Qw3rty"
ALEMBIC_PASSWORD = "alembic-pass-As4dfg"
GOOD_POLICY_YAML = (ROOT / "docs" / "operator.example.yaml").read_bytes()
BAD_POLICY = {
    "gates": {
        "writer": {"required": "often", "timeout_minutes": -1},
        "reviewer": {"auto_approve": True, "on_timeout": "fail"},
        "Bad Key!": {},
    }
}
YAML = {"Content-Type": "application/yaml"}


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app of its own, built from `settings`."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            headers={"X-API-Key": settings.api_key.get_secret_value()},
        ) as client:
            yield client


def _with_secrets(settings: Settings, tmp_path: Path) -> Settings:
    database = make_url(settings.database_url)
    if database.drivername.startswith("postgresql"):
        # The test server trusts local connections, so a password changes nothing but the URL.
        database = database.set(password=DATABASE_PASSWORD)
    policy = tmp_path / "operator.yaml"
    policy.write_bytes(GOOD_POLICY_YAML)
    return settings.model_copy(
        update={
            **{name: SecretStr(value) for name, value in SECRETS.items()},
            "database_url": database.render_as_string(hide_password=False),
            "alembic_database_url": f"postgresql+asyncpg://crew:{ALEMBIC_PASSWORD}@db:5432/crew",
            "gate_policy_file": policy,
        }
    )


async def test_the_effective_config_has_every_setting_and_no_secret(
    settings: Settings, tmp_path: Path
) -> None:
    async with serving(_with_secrets(settings, tmp_path)) as client:
        response = await client.get("/config/operator")

    assert response.status_code == 200
    for secret in [*SECRETS.values(), DATABASE_PASSWORD, ALEMBIC_PASSWORD, "pubkey9f8e7d"]:
        assert secret not in response.text
    effective = response.json()["settings"]
    assert set(effective) == set(Settings.model_fields)
    assert effective["api_key"] == effective["sentry_dsn"] == "**********"
    assert effective["alembic_database_url"] == "postgresql+asyncpg://crew:**********@db:5432/crew"
    assert effective["port"] == settings.port


async def test_an_unset_secret_shows_as_null(client: httpx.AsyncClient) -> None:
    effective = (await client.get("/config/operator")).json()["settings"]
    assert effective["openai_api_key"] is None
    assert effective["gate_policy_file"] is None


async def test_the_effective_policy_says_where_it_came_from(
    settings: Settings, tmp_path: Path
) -> None:
    configured = _with_secrets(settings, tmp_path)
    async with serving(configured) as client:
        policy = (await client.get("/config/operator")).json()["gate_policy"]

    assert (policy["source"], policy["file"]) == ("file", str(configured.gate_policy_file))
    assert policy["roles"]["writer"]["timeout_minutes"] == 60
    assert policy["nodes"]["assemble"]["auto_approve"] is True
    assert policy["by_role"]["writer"]["required"] is True
    assert policy["by_role"]["planner"] is None


async def test_with_no_policy_file_no_role_is_gated(client: httpx.AsyncClient) -> None:
    policy = (await client.get("/config/operator")).json()["gate_policy"]
    assert (policy["source"], policy["file"], policy["roles"], policy["nodes"]) == (
        "none",
        None,
        {},
        {},
    )
    assert set(policy["by_role"].values()) == {None}


async def test_validate_reports_every_problem_of_a_settings_document(
    client: httpx.AsyncClient,
) -> None:
    document = {
        "PORT": "eighty",
        "LLM_DEFAULT_PROVIDER": "anthropic-direct",
        "DATABASE_URL": "mysql://user@host/db",
        "LLM_ROLE_MODELS": "writer",
        "OPENAI_API_KEY": ["sk-never-echoed"],
        "WORKER_CONCURENCY": 4,
    }

    response = await client.post("/config/validate", json=document)

    assert response.status_code == 200
    report = response.json()
    assert (report["valid"], report["kind"]) == (False, "settings")
    assert [problem["location"] for problem in report["problems"]] == [
        "PORT",
        "LLM_DEFAULT_PROVIDER",
        "DATABASE_URL",
        "LLM_ROLE_MODELS",
        "OPENAI_API_KEY",
        "WORKER_CONCURENCY",
    ]
    assert report["problems"][-1]["message"] == "not a setting"
    assert "sk-never-echoed" not in response.text


async def test_validate_reports_every_problem_of_a_policy_with_locations(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/config/validate", json=BAD_POLICY)

    report = response.json()
    assert (response.status_code, report["valid"], report["kind"]) == (200, False, "gate_policy")
    assert [problem["location"] for problem in report["problems"]] == [
        "gates.writer.required",
        "gates.writer.timeout_minutes",
        "gates.reviewer",
        "gates.Bad Key!",
    ]
    assert report["problems"][1]["message"] == "Input should be greater than 0"


@pytest.mark.parametrize(
    ("body", "headers", "kind"),
    [
        (GOOD_POLICY_YAML, YAML, "gate_policy"),
        (json.dumps({"gates": {"writer": {"required": True}}}).encode(), {}, "gate_policy"),
        (b"PORT: 8123\nCORS_ORIGINS: https://a.example,https://b.example\n", YAML, "settings"),
        (json.dumps({"port": 8123, "WORKER_IN_API": "0"}).encode(), {}, "settings"),
        (json.dumps(dotenv_values(ROOT / ".env.example")).encode(), {}, "settings"),
    ],
)
async def test_validate_accepts_good_documents_in_json_and_yaml(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], kind: str
) -> None:
    headers = headers or {"Content-Type": "application/json"}
    response = await client.post("/config/validate", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert (response.json()["valid"], response.json()["kind"]) == (True, kind)
    assert response.json()["problems"] == []


async def test_kind_can_be_named_in_the_query_or_the_body(client: httpx.AsyncClient) -> None:
    as_policy = await client.post("/config/validate?kind=gate_policy", json={"PORT": 1})
    in_body = await client.post("/config/validate", json={"kind": "settings", "PORT": 1})

    assert as_policy.json()["problems"] == [
        {"location": "gates", "message": "missing; a gate policy holds its rules under gates:"}
    ]
    assert (in_body.json()["kind"], in_body.json()["valid"]) == ("settings", True)


async def test_conflicting_or_unknown_kinds_are_422(client: httpx.AsyncClient) -> None:
    conflict = await client.post("/config/validate?kind=settings", json={"kind": "gate_policy"})
    unknown = await client.post("/config/validate", json={"kind": "secrets"})
    bad_query = await client.post("/config/validate?kind=secrets", json={})
    assert [conflict.status_code, unknown.status_code, bad_query.status_code] == [422, 422, 422]
    assert conflict.json()["detail"] == "kind is settings in the query but gate_policy in the body"


async def test_a_policy_file_named_in_settings_is_not_read(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    secret_file = tmp_path / "private.yaml"
    secret_file.write_text("gates: [private content]\n")

    response = await client.post("/config/validate", json={"GATE_POLICY_FILE": str(secret_file)})

    assert response.json()["valid"] is True
    assert "private content" not in response.text
    assert "does not read" in response.json()["notes"][0]


@pytest.mark.parametrize(
    ("body", "headers", "detail"),
    [
        (b"{not json", {"Content-Type": "application/json"}, "the body is not valid JSON: line 1"),
        (b"gates: [unclosed", YAML, "the body is not valid YAML: line 1, column 17"),
        (b"a: 1\na: 2\n", YAML, "key 'a' is given twice"),
        (b"\xff\xfe", YAML, "not UTF-8"),
        (b"  ", YAML, "the body is empty"),
        (b"[" * 100_000, {"Content-Type": "application/json"}, "nested too deeply"),
    ],
)
async def test_a_body_that_is_not_json_or_yaml_is_400(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], detail: str
) -> None:
    response = await client.post("/config/validate", content=body, headers=headers)
    assert response.status_code == 400
    assert detail in response.json()["detail"]


async def test_a_document_that_is_not_a_mapping_is_invalid(client: httpx.AsyncClient) -> None:
    response = await client.post("/config/validate", content=b"- just\n- a list\n", headers=YAML)
    assert response.status_code == 200
    assert response.json()["problems"][0]["location"] == "document"


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 4096):
        yield body[start : start + 4096]


async def test_an_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    body = b"# padding\n" * (MAX_DOCUMENT_BYTES // 10 + 1)

    declared = await client.post("/config/validate", content=body, headers=YAML)
    # Chunked, with no Content-Length: refused once what arrived passes the limit.
    streamed = await client.post("/config/validate", content=_chunks(body), headers=YAML)

    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert "over" in declared.json()["detail"]


async def test_validating_changes_nothing(app: FastAPI, client: httpx.AsyncClient) -> None:
    before = (await client.get("/config/operator")).json()
    running_with = app.state.settings
    environment = dict(os.environ)

    for document in [
        {"PORT": 9, "API_KEY": "another-key", "DATABASE_URL": "sqlite:///elsewhere.db"},
        {"GATE_POLICY_FILE": "elsewhere.yaml", "WORKER_IN_API": False},
        {"gates": {"writer": {"required": True}}},
        BAD_POLICY,
    ]:
        assert (await client.post("/config/validate", json=document)).status_code == 200

    assert app.state.settings is running_with
    assert app.state.settings.gate_policy_file is None
    assert dict(os.environ) == environment
    assert (await client.get("/config/operator")).json() == before
    assert (await client.get("/runs", headers={"X-API-Key": "another-key"})).status_code == 401


@pytest.mark.parametrize(
    ("body", "headers", "location"),
    [
        (b"PORT: 2020-13-45\n", YAML, "PORT"),
        (b"PORT: 2020-02-30\n", YAML, "PORT"),
        (b"PORT: " + b"9" * 5000 + b"\n", YAML, "PORT"),
        (b"ARTIFACTS_DIR: ~nosuchuser/x\n", YAML, "ARTIFACTS_DIR"),
        (b"SENTRY_DSN: not-a-dsn\n", YAML, "SENTRY_DSN"),
        (b"gates: {writer: {timeout_minutes: 2020-13-45}}", YAML, "gates.writer.timeout_minutes"),
    ],
)
async def test_a_value_no_parser_can_build_is_a_problem_not_a_500(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], location: str
) -> None:
    response = await client.post("/config/validate", content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert [problem["location"] for problem in response.json()["problems"]] == [location]


async def test_a_json_integer_past_what_python_reads_is_400(client: httpx.AsyncClient) -> None:
    body = b'{"PORT": ' + b"9" * 5000 + b"}"
    response = await client.post(
        "/config/validate", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "5000 digits" in response.json()["detail"]


async def test_a_viewer_sees_no_credential_inside_any_url(settings: Settings) -> None:
    """Passwords and keys given as URL query parameters are credentials as much as user-info."""
    configured = settings.model_copy(
        update={
            "alembic_database_url": "postgresql+asyncpg://crew@db:5432/crew?password=alembic-Zx9q",
            "openai_base_url": "https://llm.example/v1?api_key=llm-key-Zx9q&region=eu",
            "ollama_base_url": "http://ollama:Ollama-pass-Zx9q@gpu:11434/v1",
        }
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        async with unit_of_work(app.state.sessions) as session:
            viewer = (await api_keys.create_key(session, "reader", KeyRole.VIEWER)).secret
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/config/operator", headers={"X-API-Key": viewer})
            await empty_tables(app.state.sessions)

    assert response.status_code == 200
    for secret in ("alembic-Zx9q", "llm-key-Zx9q", "Ollama-pass-Zx9q"):
        assert secret not in response.text
    effective = response.json()["settings"]
    assert effective["openai_base_url"] == "https://llm.example/v1?api_key=**********&region=eu"
    assert effective["ollama_base_url"] == "http://ollama:**********@gpu:11434/v1"
