"""Large bodies against a real uvicorn: a caller without a key, or with a body past the route's
limit, costs the server no memory for it (the process's RSS is read from /proc)."""

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.servers import api_process, free_port

BODY = 200 * 1024 * 1024
SENT_AT_ONCE = 1024 * 1024
# What answering a few requests may cost without reading their bodies (allocator noise).
ALLOWED_GROWTH_KIB = 40 * 1024


@pytest.fixture
def served(migrated_database: str, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """The API on a free port, its worker elsewhere; its port and process id."""
    port = free_port()
    with api_process(migrated_database, tmp_path, port, WORKER_IN_API="0") as server:
        yield port, server.pid


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def post_large_body(port: int, path: str, headers: dict[str, str], chunked: bool) -> bytes:
    """POST `BODY` bytes to `path`, stopping as soon as the server answers; its answer."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY}"
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"POST {path} HTTP/1.1\r\nHost: test\r\n{head}{framing}\r\n\r\n".encode()
    piece = b" " * SENT_AT_ONCE
    if chunked:
        piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        deadline = time.monotonic() + 60
        for _ in range(BODY // SENT_AT_ONCE):
            assert time.monotonic() < deadline, "the server neither read nor answered"
            readable, writable, _ = select.select([connection], [connection], [], 5)
            if readable:
                break
            if writable:
                try:
                    connection.send(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break
        else:
            if chunked:
                connection.sendall(b"0\r\n\r\n")
        return _answer(connection)


def _answer(connection: socket.socket) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received or not _complete(received):
        data = connection.recv(65536)
        if not data:
            break
        received += data
    return received


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_and_json(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


@pytest.mark.parametrize("chunked", [False, True], ids=["Content-Length", "chunked"])
def test_200_mb_without_a_key_or_past_the_limit_cost_no_memory(
    served: tuple[int, int], chunked: bool
) -> None:
    port, pid = served
    before = rss_kib(pid)
    json_body = {"Content-Type": "application/json"}

    no_key = post_large_body(port, "/tasks", json_body, chunked)
    too_large = post_large_body(port, "/tasks", {**json_body, "X-API-Key": API_KEY}, chunked)

    grown = rss_kib(pid) - before
    assert status_and_json(no_key)[0] == 401
    status, answer = status_and_json(too_large)
    assert (status, "limit" in str(answer["detail"])) == (413, True)
    assert grown < ALLOWED_GROWTH_KIB, f"RSS grew {grown} KiB"
