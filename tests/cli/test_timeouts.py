"""`crew` against a server that accepts connections and never answers (a hung process, a
proxy with nothing behind it): every command gives up within its timeout, 30 s by default or
CREW_TIMEOUT / --timeout, with one line and exit 3, and never sends a submission twice."""

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress

import pytest

from tests.cli.running import CREW
from tests.conftest import process_env


class _Silent:
    """A loopback server that accepts every connection, reads its request and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[str] = []  # each request line received
        self._held: list[socket.socket] = []

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self._held.append(connection)
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        with suppress(OSError):
            head = connection.recv(65536)
            if head:
                self.requests.append(head.split(b"\r\n", 1)[0].decode())

    def close(self) -> None:
        self.listener.close()
        for connection in self._held:
            connection.close()


@pytest.fixture
def silent() -> Iterator[_Silent]:
    server = _Silent()
    threading.Thread(target=server.serve, daemon=True).start()
    yield server
    server.close()


def _started(server: _Silent, *arguments: str, **extra: str) -> "subprocess.Popen[str]":
    env = process_env(CREW_URL=server.url, CREW_API_KEY="a-key", **extra)
    return subprocess.Popen(
        [CREW, *arguments], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _ended(
    commands: dict[str, "subprocess.Popen[str]"],
) -> tuple[dict[str, float], dict[str, list[str]]]:
    """How long after now each of `commands` ended, and its stderr's lines; each exited 3."""
    started = time.monotonic()
    took: dict[str, float] = {}
    said: dict[str, list[str]] = {}

    def wait(name: str, command: "subprocess.Popen[str]") -> None:
        try:
            _, stderr = command.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            command.kill()
            _, stderr = command.communicate()
        took[name], said[name] = time.monotonic() - started, stderr.strip().splitlines()

    waiting = [threading.Thread(target=wait, args=pair) for pair in commands.items()]
    for thread in waiting:
        thread.start()
    for thread in waiting:
        thread.join()
    for name, command in commands.items():
        assert command.returncode == 3, (name, said.get(name))
    return took, said


@pytest.mark.timeout(90)
def test_a_server_that_never_answers_is_given_up_on_within_the_timeout(silent: _Silent) -> None:
    # Side by side, so the test takes the default's 30 s once.
    commands = {
        "default": _started(silent, "runs"),
        "option": _started(silent, "--timeout", "2", "runs"),
        "environment": _started(
            silent, "show", "5c1b2b6e-0000-4000-8000-000000000000", CREW_TIMEOUT="3"
        ),
        "submission": _started(silent, "submit", "--demo", "--title", "Once", CREW_TIMEOUT="2"),
    }
    took, said = _ended(commands)
    assert said["default"] == ["error: GET /runs: no answer within 30s"]
    assert said["option"] == ["error: GET /runs: no answer within 2s"]
    assert said["environment"] == [
        "error: GET /runs/5c1b2b6e-0000-4000-8000-000000000000: no answer within 3s"
    ]
    assert said["submission"] == [
        "error: POST /tasks: no answer within 2s; the server may have done it, check before "
        "sending it again"
    ]
    # Each within its timeout and the start-up of a Python process.
    assert took["option"] < 2 + 4 and took["environment"] < 3 + 4, took
    assert took["default"] < 30 + 4, took
    assert [line.split()[:2] for line in silent.requests].count(["POST", "/tasks"]) == 1


def test_a_timeout_that_is_no_number_of_seconds_is_a_usage_error(silent: _Silent) -> None:
    done = _started(silent, "--timeout", "0", "runs")
    _, stderr = done.communicate(timeout=30)
    assert done.returncode == 2 and "Invalid value for '--timeout'" in stderr
    assert silent.requests == []
