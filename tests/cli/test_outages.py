"""`crew watch` (and `submit --watch`) through an outage of the server, on SQLite and
PostgreSQL: the API restarted, an API or a proxy answering 502, 503 and 504 for a while. The
watch waits it out, saying once that it lost the server and once that it is back, and ends with
the run's outcome; what the server answers (not found, a refused key) still ends it."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from crew_client import RunStatus
from tests.cli.running import crew, started
from tests.client.serving import GATED_SPEC, Served, restartable, served, wait_for_gate

__all__ = ["restartable", "served"]

RETRY_AFTER = 2
LOST, BACK = "lost the server", "the server is back"


class _Front:
    """An HTTP front of the API, as a proxy is: it passes requests through, except while
    `refusing` names statuses; then it answers each request with the next of them, as a proxy
    whose API is away does (502, 504) or an API whose database is down (503, Retry-After)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.refusing: list[int] = []
        self.refused: list[tuple[float, int]] = []  # when, and with what
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if front.refusing:
                    self._refuse(front.refusing[len(front.refused) % len(front.refusing)])
                    return
                headers = {"X-API-Key": self.headers["X-API-Key"]}
                answer = httpx.get(front.upstream + self.path, headers=headers)
                self._answer(answer.status_code, answer.content, {})

            def _refuse(self, status: int) -> None:
                front.refused.append((time.monotonic(), status))
                retry = {"Retry-After": str(RETRY_AFTER)} if status == 503 else {}
                self._answer(status, b'{"detail":"away for a while"}', retry)

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "_Front":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gated_spec(tmp_path: Path) -> str:
    spec = tmp_path / "gated.yaml"
    spec.write_text(yaml.safe_dump(GATED_SPEC))
    return str(spec)


def _said_once(stderr: str) -> None:
    lines = stderr.splitlines()
    assert [line for line in lines if LOST in line] == lines[:1], stderr
    assert lines[1:] == [BACK], stderr


@pytest.mark.timeout(180)
def test_submit_watch_rides_out_a_restart_of_the_api(restartable: Served, gated_spec: str) -> None:
    with restartable.serving(), restartable.client() as operator:
        watcher = started(restartable, "submit", "--spec", gated_spec, "--title", "Down", "--watch")
        assert watcher.stdout is not None
        run_id = watcher.stdout.readline().split()[-1]  # "submitted run <id>"
        wait_for_gate(operator, run_id)
        while "waiting" not in watcher.stdout.readline():
            assert watcher.poll() is None, watcher.communicate()
    time.sleep(3)  # down: the watch finds no server
    assert watcher.poll() is None, watcher.communicate()
    with restartable.serving(), restartable.client() as operator:
        operator.approve(run_id, notes="after the restart")
        stdout, stderr = watcher.communicate(timeout=90)

    assert watcher.returncode == 0, stderr
    assert stdout.splitlines()[-1] == f"run {run_id} succeeded"
    _said_once(stderr)


@pytest.mark.timeout(180)
def test_watch_rides_out_502_503_and_504(restartable: Served, gated_spec: str) -> None:
    with restartable.serving(), restartable.client() as operator, _Front(restartable.url) as front:
        run = operator.submit_task("Behind a proxy", GATED_SPEC)
        wait_for_gate(operator, str(run.id))
        watcher = started(restartable, "watch", str(run.id), CREW_URL=front.url)
        assert watcher.stdout is not None
        assert "waiting" in watcher.stdout.readline()
        front.refusing = [502, 503, 504]
        deadline = time.monotonic() + 60
        while {status for _, status in front.refused} != {502, 503, 504}:
            assert time.monotonic() < deadline and watcher.poll() is None, watcher.communicate()
            time.sleep(0.1)
        operator.approve(run.id, notes="while the proxy has no API")  # past the proxy
        while operator.get_run(run.id).status != RunStatus.SUCCEEDED:
            assert time.monotonic() < deadline, "the run did not end"
            time.sleep(0.1)
        assert watcher.poll() is None, watcher.communicate()
        # A read is tried again within its call (`crew_client.retry`): the watch says it lost
        # the server once a call's tries are spent.
        assert watcher.stderr is not None
        lost = watcher.stderr.readline()
        front.refusing = []
        stdout, stderr = watcher.communicate(timeout=60)

    assert watcher.returncode == 0, stderr
    assert stdout.splitlines()[-1] == f"run {run.id} succeeded"
    _said_once(lost + stderr)
    after_503 = [
        later - when
        for (when, status), (later, _) in zip(front.refused, front.refused[1:], strict=False)
        if status == 503
    ]
    assert after_503 and min(after_503) >= RETRY_AFTER - 0.05, front.refused


def test_watch_ends_on_what_the_server_answers(served: Served) -> None:
    missing = crew(served, "watch", "5c1b2b6e-0000-4000-8000-000000000000")
    refused = crew(served, "watch", "5c1b2b6e-0000-4000-8000-000000000000", CREW_API_KEY="nope")

    assert missing.returncode == 6 and "not found" in missing.stderr
    assert refused.returncode == 4 and "invalid API key" in refused.stderr
    for done in (missing, refused):
        assert done.stderr.startswith("error: ") and LOST not in done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
