"""A live event stream after PostgreSQL was out of reach for a while: once the database answers
again, the stream delivers what was written meanwhile, and what follows, within seconds.

The outage is a proxy of the test's own between the API and the server that resets every
connection and refuses new ones for `OUTAGE_SECONDS`, as a restarting server or a failover does.
"""

import contextlib
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import API_KEY
from tests.proxies import resetting_proxy_to
from tests.servers import api_process, free_port, worker_process

HEADERS = {"X-API-Key": API_KEY}
# Long enough for the event feed's supervisor to back off past a few seconds (0.5, 1, 2, 4, 8).
OUTAGE_SECONDS = 20
# What a stream may lag behind the database once it answers again: its poll, a reconnection.
CAUGHT_UP_WITHIN_SECONDS = 5


def _follow(base_url: str, run_id: str, arrivals: dict[str, float]) -> None:
    """Record when each event type of the run's stream arrives, until the stream ends."""
    with (
        contextlib.suppress(httpx.HTTPError),
        httpx.stream(
            "GET", f"{base_url}/runs/{run_id}/events/stream", headers=HEADERS, timeout=None
        ) as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("event:"):
                arrivals.setdefault(line.removeprefix("event:").strip(), time.monotonic())


def test_a_stream_catches_up_within_seconds_of_the_database_coming_back(
    postgres_database: str, tmp_path: Path
) -> None:
    """The worker reaches the database directly and finishes the run during the outage; the
    API, cut off, must stream what it wrote soon after it can read it."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = {"WORKER_IN_API": "0", "DEMO_LATENCY_MS": "300", "LOG_LEVEL": "warning"}
    with (
        resetting_proxy_to(postgres_database) as (proxy, through_proxy),
        api_process(through_proxy, tmp_path, port, **settings),
        worker_process(postgres_database, tmp_path, "direct", **settings),
    ):
        task = {"title": "Through an outage", "task_spec": {"type": "demo"}}
        run_id = httpx.post(f"{base_url}/tasks", headers=HEADERS, json=task).json()["id"]
        arrivals: dict[str, float] = {}
        follower = threading.Thread(target=_follow, args=(base_url, run_id, arrivals))
        follower.start()
        time.sleep(0.3)
        proxy.cut()
        time.sleep(OUTAGE_SECONDS)
        proxy.mend()
        mended = time.monotonic()
        follower.join(timeout=40)

    assert "run.created" in arrivals
    assert "run.succeeded" in arrivals
    assert arrivals["run.succeeded"] - mended < CAUGHT_UP_WITHIN_SECONDS
