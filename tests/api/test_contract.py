"""The served API keeps its OpenAPI document: schemathesis, run against a real server with a key
of the test's own, finds nothing.

Every operation, schemathesis's default checks (all of them), its four phases (examples,
coverage, fuzzing and the stateful phase that follows the document's links), deterministic
generation, on SQLite and PostgreSQL. What it is told to forgive, and why, is in
`contract_hooks.py`. And the document in docs/openapi.json is the one the app serves.
"""

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from apps.api.app import create_app
from apps.api.openapi import document_text
from tests.conftest import ROOT, process_env
from tests.servers import api_process, free_port

SCHEMATHESIS = Path(sys.executable).parent / "st"
MAX_EXAMPLES = 5
MIN_CASES = 1_000


def test_the_committed_document_is_the_served_one() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == document_text(create_app), "run `make openapi` and commit the result"


def test_every_error_is_declared_in_the_one_error_shape() -> None:
    document = json.loads(document_text(create_app))
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                assert "X-Request-ID" in response["headers"], (method, path, status)
                if status >= "400" and path != "/health":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)


def _cases(output: str) -> int:
    found = re.search(r"Test cases:\s*\n\s*([0-9,]+) generated", output)
    assert found, output[-3000:]
    return int(found.group(1).replace(",", ""))


@pytest.mark.timeout(600)
def test_schemathesis_finds_nothing(migrated_database: str, tmp_path: Path) -> None:
    key = secrets.token_urlsafe(24)
    port = free_port()
    served = {"API_KEY": key, "METRICS_ENABLED": "1", "DEMO_LATENCY_MS": "0"}
    with api_process(migrated_database, tmp_path, port, **served):
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "--no-color",
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--header",
                f"X-API-Key: {key}",
                "--generation-deterministic",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--continue-on-failure",
                "--request-timeout",
                "10",
            ],
            env=process_env(SCHEMATHESIS_HOOKS="tests.api.contract_hooks"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20_000:]
    cases = _cases(output)
    print(f"schemathesis: {cases:,} cases, no failure")  # shown by pytest -rP
    assert cases >= MIN_CASES, output[-3000:]
