import re
import subprocess
import sys
from pathlib import Path

import pytest

from apps.core.settings import SettingsError, load_settings
from apps.orchestrator.plans.agents import agent_for
from tests.conftest import process_env

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_run_out_of_the_box() -> None:
    settings = load_settings(_env_file=None)
    assert settings.database_url == "sqlite+aiosqlite:///./app.db"
    assert settings.migrations_database_url == settings.database_url
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.llm_default_provider == "demo"
    assert settings.cors_origins == []


def test_the_example_env_file_is_valid_and_documents_every_setting() -> None:
    settings = load_settings(_env_file=ROOT / ".env.example")
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "test-key"
    assigned = re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert {name.upper() for name in type(settings).model_fields} == set(assigned)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("port", "not-a-number", "PORT"),
        ("port", "70000", "PORT"),
        ("llm_default_provider", "anthropic-direct", "LLM_DEFAULT_PROVIDER"),
        ("database_url", "not a url", "DATABASE_URL"),
        ("database_url", "mysql://user@host/db", "DATABASE_URL"),
        ("database_url", "postgresql+asyncpg://host", "DATABASE_URL"),
        ("metrics_enabled", "perhaps", "METRICS_ENABLED"),
        ("llm_role_models", "writer", "LLM_ROLE_MODELS"),
        ("llm_role_models", "astrologer=openai:gpt-4o", "LLM_ROLE_MODELS"),
        ("llm_role_models", "writer=watsonx:granite", "LLM_ROLE_MODELS"),
        ("cors_origins", "not a url", "CORS_ORIGINS"),
        ("cors_origins", "https://ops.example.com/console", "CORS_ORIGINS"),
        ("root_path", "crew", "ROOT_PATH"),
        ("root_path", "/crew/", "ROOT_PATH"),
        ("root_path", "/crew?x=1", "ROOT_PATH"),
        ("root_path", "//evil.example", "ROOT_PATH"),
        ("root_path", "/crew/..", "ROOT_PATH"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(variable: str, value: str, named: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, **{variable: value})
    message = str(raised.value)
    assert "\n" not in message
    assert f"{named}: " in message


def test_a_secret_is_never_echoed_in_an_error() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, openai_api_key=["sk-very-secret"])
    assert "OPENAI_API_KEY: " in str(raised.value)
    assert "sk-very-secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:p@db:5432/crew", "postgresql+asyncpg://u:p@db:5432/crew"),
        ("postgresql://u@db/crew", "postgresql+asyncpg://u@db/crew"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
    ],
)
def test_plain_database_urls_get_the_async_driver(given: str, used: str) -> None:
    assert load_settings(_env_file=None, database_url=given).database_url == used


def test_roles_are_bound_to_agents_and_the_rest_get_the_default() -> None:
    settings = load_settings(
        _env_file=None,
        llm_role_models="planner=openai:gpt-4o, writer=ollama:llama3.1:8b",
        llm_default_provider="demo",
    )
    assert agent_for(settings, "writer").model_dump() == {
        "provider": "ollama",
        "model": "llama3.1:8b",
    }
    assert agent_for(settings, "planner").provider == "openai"
    assert agent_for(settings, "reviewer").model_dump() == {"provider": "demo", "model": "demo-1"}


def test_cors_origins_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example,")
    assert load_settings(_env_file=None).cors_origins == ["https://a.example", "https://b.example"]


def test_empty_variables_mean_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALEMBIC_DATABASE_URL", "")
    monkeypatch.setenv("API_KEY", "")
    settings = load_settings(_env_file=None)
    assert settings.alembic_database_url is None
    assert settings.api_key is None


S3 = {"artifact_store": "s3", "artifact_s3_bucket": "crew-artifacts"}


@pytest.mark.parametrize(
    ("given", "named", "says"),
    [
        ({"artifact_store": "ftp"}, "ARTIFACT_STORE", "'local' or 's3'"),
        ({"artifact_store": "s3"}, "ARTIFACT_S3_BUCKET", "is required with ARTIFACT_STORE=s3"),
        ({"artifact_s3_bucket": "crew"}, "ARTIFACT_S3_BUCKET", "ARTIFACT_STORE is local"),
        ({"artifact_s3_region": "eu-west-3"}, "ARTIFACT_S3_REGION", "ARTIFACT_STORE is local"),
        ({**S3, "artifact_s3_bucket": "Crew_Artifacts"}, "ARTIFACT_S3_BUCKET", "lowercase"),
        ({**S3, "artifact_s3_endpoint_url": "minio:9000"}, "ARTIFACT_S3_ENDPOINT_URL", "http"),
        ({**S3, "artifact_s3_prefix": "crew/../other"}, "ARTIFACT_S3_PREFIX", "single slashes"),
        (
            {**S3, "artifact_s3_access_key_id": "AKIA1"},
            "ARTIFACT_S3_SECRET_ACCESS_KEY",
            "is required with ARTIFACT_S3_ACCESS_KEY_ID",
        ),
        (
            {**S3, "artifact_s3_secret_access_key": "s3cr3t-Kq9"},
            "ARTIFACT_S3_SECRET_ACCESS_KEY",
            "is set without ARTIFACT_S3_ACCESS_KEY_ID",
        ),
    ],
)
def test_a_bad_artifact_store_is_one_line_naming_the_variable(
    given: dict[str, str], named: str, says: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, **given)
    message = str(raised.value)
    assert "\n" not in message
    assert f"{named}: " in message
    assert says in message
    assert "s3cr3t-Kq9" not in message
    assert "(got None)" not in message


def test_the_s3_store_takes_its_settings_with_the_prefix_trimmed() -> None:
    settings = load_settings(
        _env_file=None,
        **S3,
        artifact_s3_prefix="/crew/prod/",
        artifact_s3_endpoint_url="http://127.0.0.1:9000",
        artifact_s3_access_key_id="AKIA1",
        artifact_s3_secret_access_key="s3cr3t",
    )
    assert settings.artifact_s3_prefix == "crew/prod"
    assert settings.artifact_s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.artifact_s3_secret_access_key is not None
    assert settings.artifact_s3_secret_access_key.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(settings)


def test_a_relative_artifacts_dir_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(_env_file=None, artifacts_dir="store").artifacts_dir == tmp_path / "store"


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "apps.api", *args],
        cwd=tmp_path,
        env=process_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_server_refuses_to_start_with_a_bad_setting(tmp_path: Path) -> None:
    result = _serve(tmp_path, PORT="eighty")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: invalid setting PORT: Input should be a valid integer, unable to parse string "
        "as an integer (got 'eighty')"
    ]


def test_the_server_refuses_to_start_with_an_s3_store_and_no_bucket(tmp_path: Path) -> None:
    result = _serve(tmp_path, ARTIFACT_STORE="s3")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: invalid setting ARTIFACT_S3_BUCKET: is required with ARTIFACT_STORE=s3"
    ]


@pytest.mark.parametrize("api_key", ["", "test-key", "change-me"])
def test_production_mode_refuses_a_missing_or_placeholder_key(tmp_path: Path, api_key: str) -> None:
    result = _serve(tmp_path, "--prod", API_KEY=api_key)
    assert result.returncode != 0
    assert "API_KEY is missing or a placeholder" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_sentry_dsn_or_home_directory_stops_start_up_with_one_line(tmp_path: Path) -> None:
    bad_dsn = _serve(tmp_path, SENTRY_DSN="not-a-dsn")
    no_home = _serve(tmp_path, ARTIFACTS_DIR="~nosuchuser/x")

    assert bad_dsn.returncode != 0
    assert bad_dsn.stderr.strip().splitlines() == [
        "error: invalid setting SENTRY_DSN: not a Sentry DSN: Unsupported scheme ''"
    ]
    assert no_home.returncode != 0
    assert no_home.stderr.strip().splitlines() == [
        "error: invalid setting ARTIFACTS_DIR: ~nosuchuser/x: the home directory of "
        "~nosuchuser is unknown (got '~nosuchuser/x')"
    ]


def test_a_gate_policy_value_yaml_cannot_build_names_the_file(tmp_path: Path) -> None:
    policy = tmp_path / "operator.yaml"
    policy.write_text("gates:\n  writer:\n    timeout_minutes: 2020-13-45\n")

    result = _serve(tmp_path, GATE_POLICY_FILE=str(policy))

    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: invalid setting GATE_POLICY_FILE: {policy}: ")
    assert "gates.writer.timeout_minutes: Input should be a valid number" in line


def test_a_database_password_is_not_printed_when_start_up_refuses_its_url(tmp_path: Path) -> None:
    for url in (
        "mysql://crew:Hunter2-db-pass@db/crew",
        "postgresql://crew:Hunter2-db-pass@db",
        "postgresql://crew@db?password=Hunter2-db-pass",
    ):
        result = _serve(tmp_path, DATABASE_URL=url)
        assert result.returncode != 0
        assert "DATABASE_URL: " in result.stderr
        assert "Hunter2-db-pass" not in result.stderr
