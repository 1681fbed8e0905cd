"""A real API for the client and `crew` to talk to: uvicorn on a free port, its own migrated
database (SQLite or PostgreSQL), the worker in the process."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from alembic import command
from crew_client import Client, Gate, GateStatus
from tests.conftest import API_KEY, alembic_config, empty_database_url
from tests.servers import api_process, free_port

# A gated draft and the step after it: a run that waits for a person.
GATED_SPEC: dict[str, Any] = {
    "type": "dag",
    "nodes": [
        {"key": "draft", "role": "writer", "prompt": "Write a haiku.", "gate": {"required": True}},
        {"key": "final", "role": "editor", "prompt": "Polish it.", "deps": ["draft"]},
    ],
}
SERVER_SETTINGS = {"DEMO_LATENCY_MS": "10", "SSE_HEARTBEAT_SECONDS": "1"}


@dataclass
class Served:
    url: str
    key: str
    database_url: str
    workdir: Path
    port: int

    def client(self, key: str | None = None) -> Client:
        return Client(self.url, key or self.key)

    def log(self) -> str:
        """What the API on this port has logged so far, its access log included."""
        return (self.workdir / f"server-{self.port}.log").read_text()

    def serving(self) -> Any:
        """The API on this port and database again (after a stop), until the block ends."""
        return api_process(self.database_url, self.workdir, self.port, **SERVER_SETTINGS)


def migrated_url(backend: str, workdir: Path) -> Iterator[str]:
    for url in empty_database_url(backend, workdir):
        command.upgrade(alembic_config(url), "head")
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def restartable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """A database, and a port to serve it on, for a test that starts and stops the API."""
    for url in migrated_url(request.param, tmp_path):
        port = free_port()
        yield Served(f"http://127.0.0.1:{port}", API_KEY, url, tmp_path, port)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One API per module and backend, shared by its tests."""
    workdir = tmp_path_factory.mktemp(f"served-{request.param}")
    for url in migrated_url(request.param, workdir):
        port = free_port()
        with api_process(url, workdir, port, **SERVER_SETTINGS):
            yield Served(f"http://127.0.0.1:{port}", API_KEY, url, workdir, port)


def wait_for_gate(client: Client, run_id: str, timeout: float = 30) -> Gate:
    """The run's pending gate, once it opens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gates = client.list_gates(status=GateStatus.PENDING, run_id=run_id).items
        if gates:
            return gates[0]
        time.sleep(0.1)
    raise AssertionError(f"no gate opened on run {run_id} within {timeout} s")
