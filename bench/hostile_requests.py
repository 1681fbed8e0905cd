"""What hostile requests cost a served API: memory, time and answer size, and how it stops.

    .venv/bin/python bench/hostile_requests.py [--source DIR]

Serves the API (`python -m apps.api`, SQLite, WORKER_IN_API=0) from `--source` (this checkout by
default: give another tree, e.g. `git archive main apps alembic alembic.ini | tar -x -C DIR`, to
compare) and sends, one at a time, reading the server's VmRSS and its peak (VmHWM, reset before
each request through /proc/<pid>/clear_refs):

1. 200 MB bodies to POST /tasks: without a key and with one, with a Content-Length and chunked;
2. bodies within the task limit built to be expensive: a million unknown fields, 2,000,000 NaNs,
   2,000,000 invalid dependencies, 5,000,000 numbers;
3. GET /runs?limit=200 over 10 runs of 500 nodes with 20,000-character prompts;
4. SIGTERM with 100 open event streams: how long the server takes to stop, and its tracebacks.
"""

import argparse
import json
import pathlib
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.processes import HOST, free_port, migrate, stop, wait_ready  # noqa: E402

KEY = "bench-hostile-key-0123456789"
BODY = 200 * 1024 * 1024
PIECE = 1024 * 1024


def _status(pid: int, field: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(field)


@contextmanager
def served(source: pathlib.Path, workdir: pathlib.Path) -> Iterator[tuple[str, subprocess.Popen]]:
    url = f"sqlite+aiosqlite:///{workdir / 'hostile.db'}"
    migrate(url)
    port = free_port()
    log = workdir / "server.log"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(source),
        "DATABASE_URL": url,
        "API_KEY": KEY,
        "ARTIFACTS_DIR": str(workdir / "artifacts"),
        "WORKER_IN_API": "0",
        "PORT": str(port),
    }
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "apps.api"], cwd=workdir, env=env, stderr=output
        )
    base = f"http://{HOST}:{port}"
    try:
        wait_ready(server, base, log)
        yield base, server
    finally:
        stop(server)


class Measured:
    """RSS before, peak during and after one request of the server `pid`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> "Measured":
        self.before = _status(self.pid, "VmRSS")
        pathlib.Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.started = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.monotonic() - self.started
        self.peak = _status(self.pid, "VmHWM")
        self.after = _status(self.pid, "VmRSS")

    def line(self, what: str, answer: str) -> str:
        return (
            f"{what:44} {answer:34} {self.seconds:6.2f} s   RSS {self.before:5} -> "
            f"{self.after:5} MB, peak {self.peak:5} MB"
        )


def post_200_mb(base: str, headers: dict[str, str], chunked: bool) -> str:
    """POST 200 MB to /tasks over a raw socket, stopping when the server answers."""
    host, port = base.removeprefix("http://").split(":")
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY}"
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"POST /tasks HTTP/1.1\r\nHost: {host}\r\n{head}{framing}\r\n\r\n".encode()
    piece = b" " * PIECE
    if chunked:
        piece = f"{PIECE:x}\r\n".encode() + piece + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=300) as connection:
        connection.sendall(request)
        for _ in range(BODY // PIECE):
            if select.select([connection], [], [], 0)[0]:
                break  # the server answered before reading it all
            try:
                connection.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            if chunked:
                connection.sendall(b"0\r\n\r\n")
        answer = connection.recv(65536)
    status_line = answer.split(b"\r\n", 1)[0].decode()
    return status_line.removeprefix("HTTP/1.1 ")


def large_bodies(base: str, pid: int) -> None:
    print("200 MB bodies to POST /tasks")
    for what, headers, chunked in [
        ("no key, Content-Length", {}, False),
        ("no key, chunked", {}, True),
        ("operator key, Content-Length", {"X-API-Key": KEY}, False),
        ("operator key, chunked", {"X-API-Key": KEY}, True),
    ]:
        with Measured(pid) as measured:
            answer = post_200_mb(base, {"Content-Type": "application/json", **headers}, chunked)
        print("  " + measured.line(what, answer))


def expensive_bodies(base: str, pid: int) -> None:
    print("bodies within the task limit, with the operator key")
    node = {"key": "a", "role": "writer", "prompt": "p"}
    cases = {
        "1,000,000 unknown fields": "{" + ",".join(f'"k{i}":0' for i in range(1_000_000)) + "}",
        "2,000,000 NaNs": '{"title":"x","task_spec":{"type":"demo"},"x":['
        + ",".join(["NaN"] * 2_000_000)
        + "]}",
        "2,000,000 invalid deps": json.dumps(
            {
                "title": "x",
                "task_spec": {"type": "dag", "nodes": [node | {"deps": ["!"] * 2_000_000}]},
            }
        ),
        "5,000,000 numbers": json.dumps(
            {"title": "x", "task_spec": {"type": "demo"}, "x": [0] * 5_000_000}
        ),
    }
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    with httpx.Client(base_url=base, timeout=600) as client:
        for what, body in cases.items():
            with Measured(pid) as measured:
                response = client.post("/tasks", content=body.encode(), headers=headers)
            answer = f"{response.status_code}, {len(response.content) / 1e6:.2f} MB"
            print("  " + measured.line(f"{what} ({len(body) / 1e6:.0f} MB)", answer))


def large_lists(base: str, pid: int) -> None:
    print("GET /runs?limit=200 over 10 runs of 500 nodes with 20,000-character prompts")
    nodes = [{"key": f"n{i}", "role": "writer", "prompt": "x" * 20_000} for i in range(500)]
    task = {"title": "Large", "task_spec": {"type": "dag", "nodes": nodes}}
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=300) as client:
        for _ in range(10):
            assert client.post("/tasks", json=task).status_code == 202
        with Measured(pid) as measured:
            response = client.get("/runs", params={"limit": 200})
        answer = f"{response.status_code}, {len(response.content) / 1e6:.3f} MB"
        print("  " + measured.line("one page", answer))


def stopping(source: pathlib.Path, workdir: pathlib.Path, streams: int = 100) -> None:
    print(f"SIGTERM with {streams} open event streams")
    with served(source, workdir / "stopping") as (base, server):

        def hold() -> None:
            try:
                with (
                    httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=60) as http,
                    http.stream("GET", "/events/stream") as response,
                ):
                    for _ in response.iter_bytes():
                        pass
            except httpx.HTTPError:
                pass

        holders = [threading.Thread(target=hold, daemon=True) for _ in range(streams)]
        for holder in holders:
            holder.start()
        time.sleep(3)
        asked = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        took = time.monotonic() - asked
    log = (workdir / "stopping" / "server.log").read_text()
    tracebacks, lines = log.count("Traceback"), len(log.splitlines())
    print(f"  stopped in {took:.1f} s, {tracebacks} tracebacks, {lines} log lines")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--source", type=pathlib.Path, default=ROOT, help="the tree to serve")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crew-hostile-") as scratch:
        workdir = pathlib.Path(scratch)
        (workdir / "stopping").mkdir()
        with served(args.source, workdir) as (base, server):
            large_bodies(base, server.pid)
            expensive_bodies(base, server.pid)
            large_lists(base, server.pid)
        stopping(args.source, workdir)


if __name__ == "__main__":
    main()
