"""What requests built to hurt cost a served API: memory, time and answer size, and its stop.

    .venv/bin/python -m bench.hostile_requests                  # this checkout, ~1 min
    .venv/bin/python -m bench.hostile_requests --source DIR     # another tree, to compare
    .venv/bin/python -m bench.hostile_requests --smoke          # seconds: does it still run?

Serves `python -m apps.api` (SQLite in a scratch directory, WORKER_IN_API=0) from `--source`
(this checkout by default; e.g. `git archive main apps alembic alembic.ini | tar -x -C DIR`) and
sends one request at a time, reading the server's VmRSS and its peak (VmHWM, reset before each
request through /proc/<pid>/clear_refs):

1. 200 MB bodies to POST /tasks: without a key and with one, with a Content-Length and chunked;
2. task bodies within the limit built to be expensive: a million unknown fields, 2,000,000 NaNs,
   2,000,000 invalid dependencies, 5,000,000 numbers;
3. GET /runs?limit=200 over 10 runs of 500 nodes with 20,000-character prompts;
4. SIGTERM with 100 open event streams: how long the server takes to stop, and its tracebacks.

Targets: a body refused for its key or its size leaves RSS within 40 MB of where it was, no answer
is over 1 MB, and the server stops within 2.5 s without a traceback.
"""

import argparse
import json
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness import (
    API_COMMAND,
    API_KEY,
    HOST,
    SMOKE_HELP,
    free_port,
    migrate,
    run,
    scratch_dir,
    service_env,
    spawn,
    wait_ready,
)

MB = 1024 * 1024
RSS_TARGET_MB = 40
ANSWER_TARGET_MB = 1.0
STOP_TARGET_SECONDS = 2.5


@dataclass(frozen=True)
class Sizes:
    body: int
    fields: int
    values: int
    runs: int
    nodes: int
    streams: int


FULL = Sizes(body=200 * MB, fields=1_000_000, values=2_000_000, runs=10, nodes=500, streams=100)
SMOKE = Sizes(body=20 * MB, fields=20_000, values=40_000, runs=2, nodes=20, streams=10)


def _status_mb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no {field} for process {pid}")


@contextmanager
def served(source: Path, workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    url = f"sqlite+aiosqlite:///{workdir / 'hostile.db'}"
    migrate(url)
    port = free_port()
    env = service_env(url, WORKER_IN_API="0", PORT=str(port), LOG_LEVEL="info")
    env["PYTHONPATH"] = str(source)
    log = workdir / "server.log"
    with spawn(API_COMMAND, env, workdir, log) as server:
        base = f"http://{HOST}:{port}"
        wait_ready(server, base, log)
        yield base, server


class Measured:
    """Time, RSS before and after, and peak RSS of one request to the server `pid`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> "Measured":
        self.before = _status_mb(self.pid, "VmRSS")
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.started = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.monotonic() - self.started
        self.peak = _status_mb(self.pid, "VmHWM")
        self.after = _status_mb(self.pid, "VmRSS")

    def line(self, what: str, answer: str) -> str:
        return (
            f"  {what:46} {answer:30} {self.seconds:6.2f} s   RSS {self.before:5} -> "
            f"{self.after:5} MB, peak {self.peak:5} MB"
        )


def _post_raw(base: str, headers: dict[str, str], size: int, chunked: bool) -> str:
    """POST `size` bytes to /tasks over a socket, stopping when the server answers; its status."""
    port = int(base.rsplit(":", 1)[1])
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"POST /tasks HTTP/1.1\r\nHost: {HOST}\r\n{head}{framing}\r\n\r\n".encode()
    piece = b" " * MB
    if chunked:
        piece = f"{MB:x}\r\n".encode() + piece + b"\r\n"
    with socket.create_connection((HOST, port), timeout=300) as connection:
        connection.sendall(request)
        for _ in range(size // MB):
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
    return answer.split(b"\r\n", 1)[0].decode().removeprefix("HTTP/1.1 ")


def large_bodies(base: str, pid: int, sizes: Sizes) -> list[str]:
    print(f"{sizes.body // MB} MB bodies to POST /tasks")
    missed = []
    for what, headers, chunked in [
        ("no key, Content-Length", {}, False),
        ("no key, chunked", {}, True),
        ("operator key, Content-Length", {"X-API-Key": API_KEY}, False),
        ("operator key, chunked", {"X-API-Key": API_KEY}, True),
    ]:
        json_body = {"Content-Type": "application/json", **headers}
        with Measured(pid) as measured:
            answer = _post_raw(base, json_body, sizes.body, chunked)
        print(measured.line(what, answer))
        if measured.after - measured.before > RSS_TARGET_MB:
            missed.append(f"{what}: RSS grew {measured.after - measured.before} MB")
    return missed


def _expensive_bodies(sizes: Sizes) -> dict[str, str]:
    node = {"key": "a", "role": "writer", "prompt": "p"}
    fields = ",".join(f'"k{i}":0' for i in range(sizes.fields))
    nans = ",".join(["NaN"] * sizes.values)
    deps = {"type": "dag", "nodes": [node | {"deps": ["!"] * sizes.values}]}
    return {
        f"{sizes.fields:,} unknown fields": "{" + fields + "}",
        f"{sizes.values:,} NaNs": f'{{"title":"x","task_spec":{{"type":"demo"}},"x":[{nans}]}}',
        f"{sizes.values:,} invalid deps": json.dumps({"title": "x", "task_spec": deps}),
        f"{sizes.values * 5 // 2:,} numbers": json.dumps(
            {"title": "x", "task_spec": {"type": "demo"}, "x": [0] * (sizes.values * 5 // 2)}
        ),
    }


def expensive_bodies(base: str, pid: int, sizes: Sizes) -> list[str]:
    print("bodies within the task limit, with the operator key")
    missed = []
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    with httpx.Client(base_url=base, timeout=600) as client:
        for what, body in _expensive_bodies(sizes).items():
            with Measured(pid) as measured:
                response = client.post("/tasks", content=body.encode(), headers=headers)
            answer_mb = len(response.content) / MB
            label = f"{what} ({len(body) / MB:.1f} MB)"
            print(measured.line(label, f"{response.status_code}, {answer_mb:.2f} MB"))
            if answer_mb > ANSWER_TARGET_MB:
                missed.append(f"{what}: a {answer_mb:.0f} MB answer")
    return missed


def large_lists(base: str, pid: int, sizes: Sizes) -> list[str]:
    print(f"GET /runs?limit=200 over {sizes.runs} runs of {sizes.nodes} nodes of 20,000 characters")
    nodes = [{"key": f"n{i}", "role": "writer", "prompt": "x" * 20_000} for i in range(sizes.nodes)]
    task = {"title": "Large", "task_spec": {"type": "dag", "nodes": nodes}}
    with httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=300) as client:
        for _ in range(sizes.runs):
            client.post("/tasks", json=task).raise_for_status()
        with Measured(pid) as measured:
            response = client.get("/runs", params={"limit": 200})
    answer_mb = len(response.content) / MB
    print(measured.line("one page", f"{response.status_code}, {answer_mb:.3f} MB"))
    return [f"a {answer_mb:.0f} MB page"] if answer_mb > ANSWER_TARGET_MB else []


def _hold_stream(base: str) -> None:
    try:
        with (
            httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=60) as client,
            client.stream("GET", "/events/stream") as response,
        ):
            for _ in response.iter_bytes():
                pass
    except httpx.HTTPError:
        pass


def stopping(source: Path, workdir: Path, sizes: Sizes) -> list[str]:
    print(f"SIGTERM with {sizes.streams} open event streams")
    with served(source, workdir) as (base, server):
        holders = [
            threading.Thread(target=_hold_stream, args=(base,), daemon=True)
            for _ in range(sizes.streams)
        ]
        for holder in holders:
            holder.start()
        time.sleep(3)
        asked = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        took = time.monotonic() - asked
    log = (workdir / "server.log").read_text()
    tracebacks, lines = log.count("Traceback"), len(log.splitlines())
    print(f"  stopped in {took:.1f} s, {tracebacks} tracebacks, {lines} log lines")
    missed = [f"{tracebacks} tracebacks at stop"] if tracebacks else []
    return missed + ([f"stopped in {took:.1f} s"] if took > STOP_TARGET_SECONDS else [])


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hostile_requests",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--source", type=Path, help="the tree to serve (default: this one)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    source = (args.source or Path(__file__).resolve().parent.parent).resolve()
    sizes = SMOKE if args.smoke else FULL
    with scratch_dir("hostile") as workdir:
        (workdir / "requests").mkdir()
        (workdir / "stopping").mkdir()
        with served(source, workdir / "requests") as (base, server):
            missed = large_bodies(base, server.pid, sizes)
            missed += expensive_bodies(base, server.pid, sizes)
            missed += large_lists(base, server.pid, sizes)
        missed += stopping(source, workdir / "stopping", sizes)
    for miss in missed:
        print(f"FAIL {miss}")
    if args.smoke:
        print("\nsmoke run: the targets are not judged")
        return 0
    print("PASS" if not missed else f"{len(missed)} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    run(main)
