"""The client rides out what a real deployment does to it: a 503 is retried after its
Retry-After, and a stream followed through a restart of the server misses no event and repeats
none."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from crew_client import Client, Event, RetryPolicy, ServiceUnavailable
from tests.client.serving import GATED_SPEC, Served, restartable, wait_for_gate
from tests.conftest import API_KEY

__all__ = ["restartable"]


class _Unavailable:
    """An HTTP front of the API that answers its first `failures` requests with a 503, as a
    restarting or overloaded API does, and passes the rest through."""

    def __init__(self, upstream: str, failures: int) -> None:
        self.upstream, self.failures, self.seen = upstream, failures, 0
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                front.seen += 1
                if front.seen <= front.failures:
                    body = b'{"detail":"the database is unavailable; try again shortly"}'
                    self.send_response(503)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                answer = httpx.get(
                    front.upstream + self.path, headers={"X-API-Key": self.headers["X-API-Key"]}
                )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers["content-type"])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "_Unavailable":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_503_is_retried_after_its_retry_after(restartable: Served) -> None:
    with restartable.serving(), _Unavailable(restartable.url, failures=2) as front:
        with Client(front.url, API_KEY) as crew:
            started = time.monotonic()
            assert crew.list_runs().items == []
        assert time.monotonic() - started >= 2  # two Retry-After: 1
        assert front.seen == 3
        front.seen = 0
        impatient = Client(front.url, API_KEY, retry=RetryPolicy(attempts=2))
        with impatient, pytest.raises(ServiceUnavailable) as refused:
            impatient.list_runs()
        assert "database is unavailable" in refused.value.detail


@pytest.mark.timeout(120)
def test_a_stream_followed_through_a_restart_has_no_gap_and_no_duplicate(
    restartable: Served,
) -> None:
    streamed: list[Event] = []
    failed: list[BaseException] = []

    def follow(client: Client, run_id: str) -> None:
        try:
            with client:
                streamed.extend(client.stream_events(run_id))
        except BaseException as error:
            failed.append(error)

    with restartable.serving(), restartable.client() as crew:
        run = crew.submit_task("Through a restart", GATED_SPEC)
        follower = threading.Thread(
            target=follow, args=(restartable.client(), str(run.id)), daemon=True
        )
        follower.start()
        wait_for_gate(crew, str(run.id))
        deadline = time.monotonic() + 30
        while not any(event.type == "gate.waiting" for event in streamed):
            assert time.monotonic() < deadline, "the gate's event never came"
            time.sleep(0.05)
        before = len(streamed)
    # The server is down here; the follower keeps trying to reconnect.
    time.sleep(1)
    with restartable.serving(), restartable.client() as operator:
        operator.approve(run.id, notes="after the restart")
        follower.join(timeout=60)
        assert not follower.is_alive()
        assert not failed
        polled = list(operator.iter_events(run_id=run.id))
    assert before > 0
    assert [event.id for event in streamed] == [event.id for event in polled]
    assert streamed[-1].type == "run.succeeded"
