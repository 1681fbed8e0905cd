"""Debian's Prometheus server and promtool for the tests, installed with apt-get when missing.

Where they cannot be installed (not root, no apt-get, no network) the tests that need them skip
and say why; under CI=true they fail instead, so CI never passes without them.
"""

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
_INSTALL = [
    "apt-get", "install", "-y", "-q", "--no-install-recommends",
    "-o", "DPkg::Lock::Timeout=300", "prometheus",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class PrometheusTools:
    server: str
    promtool: str


def _found() -> PrometheusTools | None:
    server, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return PrometheusTools(server, promtool) if server and promtool else None


def _install() -> str:
    """Install Debian's prometheus package; what went wrong, if anything."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return "apt-get is missing or this is not root"
    env = {**os.environ, **_APT_ENV}
    for attempt in range(2):
        if attempt:  # The package lists may be missing or old on a fresh machine.
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(_INSTALL, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode == 0:
            return ""
    return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "apt-get failed"


def prometheus_tools() -> PrometheusTools:
    """The installed `prometheus` and `promtool`, installing them first if needed."""
    tools = _found()
    problem = "" if tools else _install()
    tools = _found()
    if tools:
        return tools
    message = "Prometheus tests need Debian's prometheus package, which could not be installed: "
    message += f"{problem} (apt-get install prometheus)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _wait_until_ready(base_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base_url}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"Prometheus was not ready within 60 s:\n{log.read_text()}")


@contextmanager
def prometheus_server(binary: str, config: Path, workdir: Path) -> Iterator[str]:
    """Prometheus with `config` on a free loopback port until the block ends; its base URL."""
    port = free_port()
    log = workdir / "prometheus.log"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with (
        log.open("wb") as output,
        subprocess.Popen(command, stdout=output, stderr=output) as server,
    ):
        try:
            _wait_until_ready(f"http://127.0.0.1:{port}", server, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
