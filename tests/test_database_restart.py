"""The service rides out a PostgreSQL restart: an API process with its worker, and a standalone
worker, keep going once the server is back; runs in flight finish, none is left stuck.

The restart happens on a PostgreSQL cluster of the test's own (initdb'd into a temporary
directory, on a free port), so that no other test's database goes down with it.
"""

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from alembic import command
from tests.conftest import API_KEY, alembic_config, postgres_server_url
from tests.servers import api_process, free_port, worker_process

HEADERS = {"X-API-Key": API_KEY}
PG_BIN = Path("/usr/lib/postgresql") / "15" / "bin"
SETTINGS = {"DEMO_LATENCY_MS": "400", "LEASE_SECONDS": "3", "LOG_LEVEL": "warning"}
# Longer than a lease: the workers' heartbeats fail meanwhile, as in a real outage.
OUTAGE_SECONDS = 4


@dataclass(frozen=True)
class Cluster:
    home: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1"
        self._pg_ctl("-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "stop")

    def _pg_ctl(self, *arguments: str) -> None:
        # The server's output goes to its log, not to a pipe it would hold open.
        data, log = str(self.home / "data"), str(self.home / "server.log")
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", data, "-l", log, "-w", *arguments)


def _as_postgres(*command: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [*prefix, *command],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )


def _cluster_tools_or_skip() -> None:
    postgres_server_url()
    missing = not (PG_BIN / "initdb").exists() or (
        os.geteuid() == 0 and shutil.which("runuser") is None
    )
    if missing and not os.environ.get("REQUIRE_POSTGRES"):
        pytest.skip(f"a PostgreSQL restart needs initdb and pg_ctl in {PG_BIN}")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL 15 cluster of this test's own, trusting local connections. Its directory is
    outside pytest's (which only root may enter) so that the postgres user can own it."""
    _cluster_tools_or_skip()
    with tempfile.TemporaryDirectory(prefix="crew-pg-") as directory:
        yield from _running_cluster(Path(directory))


def _running_cluster(home: Path) -> Iterator[Cluster]:
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
    initdb = str(PG_BIN / "initdb")
    _as_postgres(initdb, "-D", str(home / "data"), "-A", "trust", "-U", "postgres")
    found = Cluster(home, free_port())
    found.start()
    try:
        yield found
    finally:
        found.stop("immediate")


def _wait_for(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if found := check():
                return found
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {seconds:g} s")


def _statuses(client: httpx.Client, run_ids: list[str]) -> list[str]:
    return [client.get(f"/runs/{run_id}", headers=HEADERS).json()["status"] for run_id in run_ids]


def test_runs_in_flight_finish_after_postgresql_stops_and_starts_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    command.upgrade(alembic_config(cluster.url), "head")
    port = free_port()
    with (
        api_process(cluster.url, tmp_path, port, **SETTINGS),
        worker_process(cluster.url, tmp_path, "standalone", **SETTINGS),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        body = {"title": "Through a restart", "task_spec": {"type": "demo"}}
        run_ids = [client.post("/tasks", json=body, headers=HEADERS).json()["id"] for _ in range(6)]
        _wait_for(lambda: "running" in _statuses(client, run_ids), 30, "runs starting")

        cluster.stop()
        down = client.get("/runs", headers=HEADERS)
        health = client.get("/health")
        time.sleep(OUTAGE_SECONDS)
        cluster.start()

        _wait_for(lambda: client.get("/health").status_code == 200, 60, "the API's database back")
        _wait_for(
            lambda: set(_statuses(client, run_ids)) == {"succeeded"}, 120, "every run succeeding"
        )
        nodes = [
            node
            for run_id in run_ids
            for node in client.get(f"/runs/{run_id}/nodes", headers=HEADERS).json()["items"]
        ]

    assert down.status_code == 503
    assert down.json()["detail"] == "the database is unavailable; try again shortly"
    assert health.status_code == 503
    assert {node["status"] for node in nodes} == {"succeeded"}
