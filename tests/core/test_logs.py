import json
import logging
import subprocess
import sys
import uuid

from apps.core.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    current_context,
    log_context,
    request_context,
)
from apps.core.redaction import REDACTED, configured_secrets
from apps.core.settings import load_settings
from tests.conftest import ROOT


def record(message: str = "node finished", exc_info: bool = False) -> logging.LogRecord:
    made = logging.LogRecord("apps.worker", logging.INFO, __file__, 1, message, (), None)
    if exc_info:
        try:
            raise ValueError("boom")
        except ValueError:
            made.exc_info = sys.exc_info()
    ContextFilter().filter(made)
    return made


def test_the_worker_binds_run_and_node_for_the_lines_it_writes() -> None:
    run_id, node_id = uuid.uuid4(), uuid.uuid4()
    with log_context(run_id=run_id, node_id=node_id):
        line = TextFormatter().format(record())
    assert line.endswith(f"apps.worker: node finished [run_id={run_id} node_id={node_id}]")
    assert current_context() == {}


def test_a_request_line_names_the_run_its_path_names_once_routed() -> None:
    scope: dict[str, object] = {"type": "http"}
    with request_context("req-1", scope):
        assert current_context() == {"request_id": "req-1"}
        scope["path_params"] = {"run_id": uuid.UUID(int=7)}
        document = json.loads(JsonFormatter().format(record()))
    assert document["request_id"] == "req-1"
    assert document["run_id"] == str(uuid.UUID(int=7))
    assert {"time", "level", "logger", "message"} <= set(document)
    assert "node_id" not in document


def test_json_lines_carry_the_traceback() -> None:
    document = json.loads(JsonFormatter().format(record(exc_info=True)))
    assert document["level"] == "info"
    assert "ValueError: boom" in document["exception"]


def test_secrets_never_reach_a_line() -> None:
    secrets = ["sk-secret-openai-key", "admin-key-1234"]
    message = "calling with sk-secret-openai-key and admin-key-1234"
    for formatter in (TextFormatter(secrets=secrets), JsonFormatter(secrets=secrets)):
        line = formatter.format(record(message))
        assert "sk-secret" not in line
        assert "admin-key-1234" not in line
        assert line.count(REDACTED) == 2


def test_the_logging_config_writes_json_lines_without_the_key() -> None:
    program = (
        "import logging, logging.config\n"
        "from apps.core.logs import logging_config, log_context\n"
        "from apps.core.settings import load_settings\n"
        "settings = load_settings(_env_file=None, api_key='k-12345678', log_format='json')\n"
        "logging.config.dictConfig(logging_config(settings))\n"
        "with log_context(run_id='r-1'):\n"
        "    logging.getLogger('apps.x').warning('key k-12345678 seen')\n"
        "logging.getLogger('uvicorn.access').info('GET /runs 200')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True
    )
    first, second = (json.loads(line) for line in done.stderr.splitlines())
    assert first == first | {"level": "warning", "logger": "apps.x", "run_id": "r-1"}
    assert first["message"] == f"key {REDACTED} seen"
    assert second["logger"] == "uvicorn.access"


def test_a_secret_too_short_to_tell_from_words_is_not_redacted() -> None:
    settings = load_settings(_env_file=None, api_key="k", openai_api_key="sk-long-enough")
    assert configured_secrets(settings) == ["sk-long-enough"]


def test_text_is_the_default_format() -> None:
    assert load_settings(_env_file=None).log_format == "text"
