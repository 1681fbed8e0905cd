"""conf/operator.yaml as a settings source: read by default, below the environment and `.env`,
its unused keys a warning, a bad value one line naming its key."""

import subprocess
import sys
from pathlib import Path

import pytest

from apps.core.operator_file import read_operator_file, unused_keys
from apps.core.settings import SettingsError, load_settings, startup_warnings
from apps.orchestrator.plans.gate_policy import gate_policy_of
from tests.conftest import process_env
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]

CONSOLE_FILE = """\
server:
  host: "127.0.0.2"
  port: 8123
  log_level: "debug"
security:
  admin_token_env: "OPS_TOKEN"
  cors:
    enabled: true
    allow_origins: ["https://ops.example.com"]
gates:
  script:
    required: true
    timeout_minutes: 60
"""


@pytest.fixture
def console_file(tmp_path: Path) -> Path:
    path = tmp_path / "operator.yaml"
    path.write_text(CONSOLE_FILE)
    return path


@pytest.fixture
def in_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a conf/operator.yaml, as a fresh clone has, and no .env."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "operator.yaml").write_text(CONSOLE_FILE)
    monkeypatch.chdir(tmp_path)
    for name in ("HOST", "PORT", "LOG_LEVEL", "CORS_ORIGINS", "OPERATOR_CONFIG", "OPS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_repositorys_file_has_the_documents_sections_and_nothing_unused() -> None:
    document = read_operator_file(ROOT / "conf" / "operator.yaml")

    assert document.server is not None
    assert (document.server.host, document.server.port) == ("127.0.0.1", 8008)
    assert document.security is not None
    assert document.security.admin_token_env == "ADMIN_TOKEN"
    assert document.gates == {
        "script": {"required": True, "auto_approve": False, "timeout_minutes": 60}
    }
    assert unused_keys(document) == []


def test_the_default_file_is_read_when_present(in_a_checkout: Path) -> None:
    settings = load_settings(_env_file=None, operator_console=True)

    assert settings.operator_config == Path("conf/operator.yaml")
    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.2", 8123, "debug")
    assert settings.cors_origins == ["https://ops.example.com"]
    assert settings.admin_token_env == "OPS_TOKEN"
    assert settings.gate_policy_file == Path("conf/operator.yaml")
    assert "script" in gate_policy_of(settings).nodes


def test_its_server_section_is_the_operator_consoles_address_only(in_a_checkout: Path) -> None:
    settings = load_settings(_env_file=None)

    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.1", 8000, "info")
    assert settings.cors_origins == ["https://ops.example.com"]


def test_environment_and_dotenv_win_over_the_file_which_wins_over_defaults(
    in_a_checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (in_a_checkout / ".env").write_text("PORT=9001\nLOG_LEVEL=warning\n")
    monkeypatch.setenv("LOG_LEVEL", "error")

    settings = load_settings(_env_file=".env", operator_console=True)

    assert settings.log_level == "error"  # environment over .env over the file
    assert settings.port == 9001  # .env over the file
    assert settings.host == "127.0.0.2"  # the file over the default
    assert settings.web_concurrency == 2  # the default


def test_a_setting_may_name_another_file(
    in_a_checkout: Path, console_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    console_file.write_text("server:\n  port: 8200\n")
    monkeypatch.setenv("OPERATOR_CONFIG", str(console_file))

    settings = load_settings(_env_file=None, operator_console=True)

    assert (settings.operator_config, settings.port) == (console_file, 8200)
    assert settings.gate_policy_file is None


def test_a_named_file_that_is_missing_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"OPERATOR_CONFIG: .*no such file"):
        load_settings(_env_file=None, operator_config=tmp_path / "absent.yaml")


def test_the_admin_token_is_read_from_the_variable_the_file_names(
    in_a_checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "not-this-one")
    monkeypatch.setenv("OPS_TOKEN", "this-one")

    settings = load_settings(_env_file=None)

    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "this-one"


def test_the_admin_token_may_come_from_dotenv_and_defaults_to_admin_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    (tmp_path / ".env").write_text("ADMIN_TOKEN=from-dotenv\n")

    settings = load_settings(_env_file=".env")

    assert settings.admin_token_env == "ADMIN_TOKEN"
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "from-dotenv"
    assert "from-dotenv" not in repr(settings)


def test_unused_sections_and_keys_are_named_in_a_warning(
    in_a_checkout: Path, console_file: Path
) -> None:
    console_file.write_text(
        CONSOLE_FILE + "pipeline:\n  stages: [fetch]\n"
        "server:\n  port: 8008\n  workers: 4\n"
        "security:\n  cors:\n    enabled: false\n    allow_headers: ['*']\n"
    )

    settings = load_settings(_env_file=None, operator_config=console_file)
    (warning,) = startup_warnings(settings)

    assert "pipeline" in warning
    assert "server.workers" in warning
    assert "security.cors.allow_headers" in warning


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("server:\n  port: eighty\n", "server.port"),
        ("server:\n  port: 70000\n", "server.port"),
        ("server:\n  log_level: loud\n", "server.log_level"),
        ("security:\n  admin_token_env: 'not a name'\n", "security.admin_token_env"),
        ("security:\n  cors:\n    enabled: perhaps\n", "security.cors.enabled"),
        ("server: [1, 2]\n", "server"),
        ("server:\n  port: [8008\n", "line"),
        ("gates:\n  script:\n    required: perhaps\n", "gates.script.required"),
    ],
)
def test_a_malformed_file_stops_start_up_with_one_line_naming_the_key(
    tmp_path: Path, content: str, named: str
) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(content)

    with pytest.raises(SettingsError) as raised:
        settings = load_settings(_env_file=None, operator_config=path)
        gate_policy_of(settings)  # the gates: section is checked as entry points do

    message = str(raised.value)
    assert "\n" not in message
    assert named in message
    assert str(path) in message


def test_on_a_fresh_clone_api_run_serves_on_8000_and_op_console_on_8008(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """.env is .env.example there (make copies it), whose empty PORT leaves both their own."""
    monkeypatch.chdir(ROOT)
    for name in ("HOST", "PORT", "LOG_LEVEL", "OPERATOR_CONFIG"):
        monkeypatch.delenv(name, raising=False)

    api_run = load_settings(_env_file=ROOT / ".env.example")
    op_console = load_settings(_env_file=ROOT / ".env.example", operator_console=True)

    assert (api_run.host, api_run.port) == ("127.0.0.1", 8000)
    assert (op_console.host, op_console.port) == ("127.0.0.1", 8008)


def test_the_openai_preset_without_its_key_is_a_warning() -> None:
    settings = load_settings(_env_file=None, llm_default_provider="openai")
    role_bound = load_settings(_env_file=None, llm_role_models="writer=openai:gpt-4o")
    with_key = load_settings(
        _env_file=None, llm_default_provider="openai", openai_api_key="sk-test"
    )

    assert any("OPENAI_API_KEY is not set" in line for line in startup_warnings(settings))
    assert any("writer" in line for line in startup_warnings(role_bound))
    assert not [line for line in startup_warnings(with_key) if "OPENAI" in line]


def test_the_server_prints_the_warnings_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "operator.yaml").write_text("server:\n  port: 0\n")
    (tmp_path / "odd.yaml").write_text(f"server:\n  port: {free_port()}\n  workers: 2\n")
    env = process_env(
        LLM_DEFAULT_PROVIDER="openai",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        WORKER_IN_API="0",
    )
    command = [sys.executable, "-m", "apps.api", "--op-console"]

    refused = subprocess.run(
        command,
        cwd=tmp_path,
        env=env | {"OPERATOR_CONFIG": "operator.yaml"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    with subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env | {"OPERATOR_CONFIG": "odd.yaml"},
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stderr is not None
        try:
            warnings = [server.stderr.readline(), server.stderr.readline()]
        finally:
            server.terminate()

    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "server.port: Input should be greater than or equal to 1" in refused.stderr
    assert warnings[0].startswith("warning: odd.yaml: not used, ignored: server.workers")
    assert warnings[1].startswith("warning: LLM_DEFAULT_PROVIDER uses the openai provider")
