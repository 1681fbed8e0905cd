"""What the benchmarks share: where they run (scratch directories, fresh migrated databases on
SQLite or PostgreSQL), the service's processes on loopback with the benchmark's settings, the
plans they submit, and how a benchmark's command ends (`run`)."""

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import httpx
from alembic.config import Config
from sqlalchemy.engine import make_url

from alembic import command
from apps.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
HOST = "127.0.0.1"
START_TIMEOUT = 60.0
API_KEY = "bench-key"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
SMOKE_HELP = (
    "tiny sizes, a few seconds: check that the benchmark runs end to end (what CI does); "
    "its figures mean nothing and its targets are not judged"
)


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


# --- databases -----------------------------------------------------------------------------------


def postgres_server(required: bool) -> str | None:
    """The PostgreSQL server to use (TEST_POSTGRES_URL, else the local one), or None with a note
    when it does not answer and is not `required`."""
    url = os.environ.get("TEST_POSTGRES_URL") or DEFAULT_POSTGRES
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        asyncio.run(postgres_admin(url, "SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        if required:
            raise BenchError(f"PostgreSQL at {shown} is not reachable: {error}") from None
        print(f"== postgresql: skipped, {shown} is not reachable ({type(error).__name__})")
        return None
    return url


def servers(choice: str) -> list[tuple[str, str | None]]:
    """The backends `--backend` chose, with their PostgreSQL server (None for SQLite)."""
    chosen: list[tuple[str, str | None]] = []
    if choice in ("sqlite", "both"):
        chosen.append(("sqlite", None))
    if choice in ("postgresql", "both"):
        server = postgres_server(required=choice == "postgresql")
        if server is not None:
            chosen.append(("postgresql", server))
    return chosen


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A new directory under the system's temporary directory (databases, artifacts, a
    process's working directory), removed after. Not in the checkout: on the project's machine
    its tree is watched, and a file created there costs about 2 ms, fifty times what it costs
    in /tmp, which would measure the watcher rather than the service."""
    with tempfile.TemporaryDirectory(prefix=f"crew-bench-{prefix}-") as path:
        yield Path(path)


@contextlib.contextmanager
def postgres_database(server: str, *, template: str | None = None) -> Iterator[str]:
    """A new database `bench_<random>` on `server`, empty or a copy of `template`; dropped
    after."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    asyncio.run(postgres_admin(server, f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(postgres_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def fresh_database(backend: str, server: str | None) -> Iterator[str]:
    """A new migrated database of `backend`, removed (SQLite) or dropped (PostgreSQL) after."""
    if backend == "sqlite":
        with scratch_dir("sqlite") as directory:
            url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
            migrate(url)
            yield url
        return
    with postgres_database(server or "") as url:
        migrate(url)
        yield url


# --- the service's processes ---------------------------------------------------------------------


def service_env(url: str, **settings: str) -> dict[str, str]:
    """The environment without any of the service's own settings, then the benchmark's: the
    database `url`, its key, warnings only, and `settings`."""
    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    # The processes run from scratch directories, so that no .env is read: the benchmarks
    # (bench.ceiling_app) are found from the checkout, the service from its installation.
    env.update(PYTHONPATH=str(ROOT), DATABASE_URL=url, API_KEY=API_KEY, LOG_LEVEL="warning")
    return env | settings


@contextlib.contextmanager
def spawn(
    command: Sequence[str], env: dict[str, str], workdir: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` from `workdir`, its output into `log`; stopped when the block ends."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=output, stderr=output)
        try:
            yield process
        finally:
            stop(process)


API_COMMAND = (sys.executable, "-m", "apps.api")
WORKER_COMMAND = (sys.executable, "-m", "apps.orchestrator.worker")


# --- plans ---------------------------------------------------------------------------------------


def dag_node(index: int, deps: list[int]) -> dict[str, Any]:
    """Node `index` of a dag task spec, a writer depending on the nodes `deps`."""
    return {
        "key": f"n{index:03d}",
        "role": "writer",
        "prompt": f"Write part {index}.",
        "deps": [f"n{dep:03d}" for dep in deps],
    }


def wide_dag(nodes: int) -> list[dict[str, Any]]:
    """A root, `nodes - 2` nodes on it, a last node on all of those."""
    middle = list(range(1, nodes - 1))
    return [dag_node(0, []), *(dag_node(i, [0]) for i in middle), dag_node(nodes - 1, middle)]


# --- the command ---------------------------------------------------------------------------------


def run(main: Callable[[], int]) -> NoReturn:
    """End the process with what `main` answered: 0 when every target passes (or a smoke run
    went through), 1 when one fails; 2 with the reason when the benchmark could not run."""
    try:
        status = main()
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status)


def machine_load() -> str:
    """The load averages over 1, 5 and 15 minutes: the machine is shared, and figures taken at a
    load of 4 are not figures taken at 1."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


_ECHO = "import os\nwhile os.read(0, 1):\n    os.write(1, b'.')"


def process_round_trip_us(exchanges: int = 2_000) -> float:
    """Microseconds for a byte to reach another process through a pipe and come back: a
    sleeping process woken twice. Every round trip to PostgreSQL pays it; on this virtual
    machine it has ranged from ~7 to ~88 µs, slow when the machine is idle, which the load
    alone does not show."""
    echo = subprocess.Popen(
        [sys.executable, "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )
    assert echo.stdin is not None and echo.stdout is not None
    try:
        echo.stdin.write(b".")
        echo.stdout.read(1)
        started = time.perf_counter()
        for _ in range(exchanges):
            echo.stdin.write(b".")
            echo.stdout.read(1)
        return (time.perf_counter() - started) / exchanges * 1e6
    finally:
        echo.stdin.close()
        echo.wait()


def _reference_work() -> int:
    keys = []
    for index in range(100_000):
        row = {"id": index, "key": f"node-{index}", "deps": [index - 1, index - 2]}
        keys.append(row["key"].upper() + str(len(row["deps"])))
    return len("".join(keys))


def python_pace_ms(times: int = 5) -> float:
    """Milliseconds for a fixed piece of plain Python (100,000 small dicts and strings), the
    fastest of `times` after a first run that grows the heap: how fast the machine runs the
    interpreter now. Sessions run on virtual machines whose CPUs differ, and a CPU-bound figure
    (a chain node's pass) moves with the pace where the load and the round trip say nothing."""
    _reference_work()
    fastest = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        _reference_work()
        fastest = min(fastest, time.perf_counter() - started)
    return fastest * 1000


def machine_state() -> str:
    """`machine_load`, `process_round_trip_us` and `python_pace_ms`, as a benchmark prints them
    beside its figures."""
    return (
        f"load (1, 5, 15 min) {machine_load()}; "
        f"a round trip between two processes {process_round_trip_us():.0f} µs; "
        f"Python's pace {python_pace_ms():.0f} ms (a fixed loop, lower is faster)"
    )
