"""Settings whose values would let the service start and fail later, or not start with a trace:
each is one line naming the variable."""

import subprocess
import sys
from pathlib import Path

import pytest

from apps.core.settings import SettingsError, load_settings
from tests.conftest import process_env
from tests.servers import api_process, free_port


@pytest.mark.parametrize("variable", ["openai_base_url", "ollama_base_url"])
@pytest.mark.parametrize("value", ["notaurl", "ftp://llm.example/v1", "http:///v1"])
def test_a_provider_base_url_must_be_http(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, **{variable: value})
    assert str(raised.value) == (
        f"invalid setting {variable.upper()}: must be an http:// or https:// URL, e.g. "
        f"http://127.0.0.1:11434/v1 (got {value!r})"
    )


def test_a_provider_base_url_may_carry_a_query() -> None:
    url = "https://crew.openai.azure.com/openai?api-version=2024-10-21"
    assert load_settings(_env_file=None, openai_base_url=url).openai_base_url == url


def test_a_database_url_hint_is_not_taken_for_a_credential() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, database_url="garbage")
    assert "postgresql+asyncpg://user@host:5432/dbname" in str(raised.value)
    assert "[redacted]" not in str(raised.value)


def test_a_dotenv_file_that_is_not_utf8_stops_start_up_in_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"API_KEY=\xff\xfe\n")
    done = subprocess.run(
        [sys.executable, "-m", "apps.api"],
        cwd=tmp_path,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: invalid settings file .env: is not UTF-8 text (byte 8)"
    ]


def test_a_dotenv_line_that_cannot_be_parsed_is_warned_of_once(
    migrated_database: str, tmp_path: Path
) -> None:
    """The API's entry point reads its settings, then its app does: python-dotenv warns of a
    line it cannot parse each time; the operator hears of each such line once."""
    (tmp_path / ".env").write_text("LOG_LEVEL=info\nthis is not a setting\n'unterminated\n")
    port = free_port()
    with api_process(migrated_database, tmp_path, port, WORKER_IN_API="0"):
        pass
    log = (tmp_path / f"server-{port}.log").read_text()
    for line in (2, 3):
        assert log.count(f"could not parse statement starting at line {line}\n") == 1, log
