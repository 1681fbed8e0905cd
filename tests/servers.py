"""Real API processes for end-to-end tests: `python -m apps.api` on a free loopback port."""

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, process_env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(base_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            httpx.get(f"{base_url}/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("the server did not come up within 30 s")


def _environment(database_url: str, workdir: Path, **settings: str) -> dict[str, str]:
    defaults = {
        "DATABASE_URL": database_url,
        "API_KEY": API_KEY,
        "ARTIFACTS_DIR": str(workdir / "artifacts"),
    }
    return process_env(**(defaults | settings))


@contextmanager
def worker_process(
    database_url: str, workdir: Path, name: str, **settings: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A standalone worker (`python -m apps.orchestrator.worker`) until the block ends."""
    env = _environment(database_url, workdir, **settings)
    log = workdir / f"worker-{name}.log"
    with (
        log.open("ab") as output,
        subprocess.Popen(
            [sys.executable, "-m", "apps.orchestrator.worker"],
            cwd=workdir,
            env=env,
            stderr=output,
        ) as worker,
    ):
        try:
            yield worker
        finally:
            if worker.poll() is None:
                worker.terminate()


@contextmanager
def api_process(
    database_url: str,
    workdir: Path,
    port: int,
    *,
    arguments: Sequence[str] = ("-m", "apps.api"),
    **settings: str,
) -> Iterator[subprocess.Popen[bytes]]:
    """The API serving `database_url` on `port` until the block ends; its log in `workdir`.

    `arguments` are the Python interpreter's: the entry point by default, or e.g. uvicorn serving
    an app factory of the tests' own.
    """
    env = _environment(database_url, workdir, PORT=str(port), **settings)
    log = workdir / f"server-{port}.log"
    with (
        log.open("ab") as output,
        subprocess.Popen(
            [sys.executable, *arguments], cwd=workdir, env=env, stderr=output
        ) as server,
    ):
        try:
            _wait_until_up(f"http://127.0.0.1:{port}", server, log)
            yield server
        finally:
            if server.poll() is None:
                server.terminate()
