"""What the benchmark scripts share: scratch databases, migrations and API processes on loopback."""

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from alembic.config import Config
from sqlalchemy.engine import make_url

from alembic import command

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
HOST = "127.0.0.1"
START_TIMEOUT = 60.0


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


def plain_dsn(url: str) -> str:
    """`url` as asyncpg wants it: no SQLAlchemy driver suffix."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def postgres_admin(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(plain_dsn(server_url), timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def migrate(url: str) -> None:
    """`alembic upgrade head`, configured without alembic.ini's logging (no INFO lines)."""
    config = Config()
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = url
    command.upgrade(config, "head")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def wait_ready(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    """Return once the server answers /health; `BenchError` if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise BenchError(f"the server exited ({process.returncode}):\n{tail}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/health", timeout=1, trust_env=False).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"the server did not answer /health within {START_TIMEOUT:g}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class _SentryHandler(BaseHTTPRequestHandler):
    envelopes: list[int]

    def log_message(self, *_: Any) -> None:
        return

    def do_POST(self) -> None:
        self.envelopes.append(len(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def sentry_sink() -> Iterator[tuple[str, list[int]]]:
    """A Sentry endpoint on loopback that accepts what an SDK sends: its DSN, and the sizes of
    the envelopes it received."""
    envelopes: list[int] = []
    handler = type("Handler", (_SentryHandler,), {"envelopes": envelopes})
    server = ThreadingHTTPServer((HOST, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://public@{HOST}:{server.server_address[1]}/1", envelopes
    finally:
        server.shutdown()
        server.server_close()
