"""A PostgreSQL that stops answering without refusing (a network partition, a failover that drops
packets) is a database out of reach: requests answer 503 within seconds instead of hanging (on a
pooled connection, for good) or answering 500 a minute later; the scrape still serves what the
process recorded; and the API goes on once the database answers again.

The freeze is a proxy of the test's own between the API and the server: it stops passing bytes
either way, and leaves every connection open."""

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY
from tests.proxies import proxy_to
from tests.servers import api_process, free_port

HEADERS = {"X-API-Key": API_KEY}
# What the service waits at most, with room for a busy machine: the pool's ping (2 s), then a new
# connection (5 s).
ANSWER_WITHIN_SECONDS = 15


def _timed_get(base_url: str, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.get(f"{base_url}{path}", headers=HEADERS, timeout=120)
    return response, time.monotonic() - started


def _metric_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def test_a_database_that_stops_answering_is_a_quick_503_and_the_api_goes_on(
    postgres_database: str, tmp_path: Path
) -> None:
    port = free_port()
    with proxy_to(postgres_database) as (proxy, through_proxy):
        settings = {"METRICS_ENABLED": "1", "WORKER_IN_API": "0", "LOG_LEVEL": "warning"}
        with api_process(through_proxy, tmp_path, port, **settings):
            base_url = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{base_url}/runs", headers=HEADERS).status_code == 200
            assert "crew_runs" in _metric_names(httpx.get(f"{base_url}/metrics").text)

            proxy.frozen.set()
            runs, runs_took = _timed_get(base_url, "/runs")
            task = {"title": "During the freeze", "task_spec": {"type": "demo"}}
            started = time.monotonic()
            submitted = httpx.post(f"{base_url}/tasks", headers=HEADERS, json=task, timeout=120)
            submit_took = time.monotonic() - started
            scrape, scrape_took = _timed_get(base_url, "/metrics")
            health, _ = _timed_get(base_url, "/health")
            proxy.frozen.clear()

            deadline = time.monotonic() + 30
            while (after := httpx.get(f"{base_url}/runs", headers=HEADERS)).status_code != 200:
                assert time.monotonic() < deadline, after.text
                time.sleep(0.2)

    assert (runs.status_code, runs.json()) == (
        503,
        {"detail": "the database is unavailable; try again shortly"},
    )
    assert runs.headers["retry-after"] == "1"
    assert runs_took < ANSWER_WITHIN_SECONDS
    assert submitted.status_code == 503
    assert submit_took < ANSWER_WITHIN_SECONDS
    assert scrape.status_code == 200
    assert scrape_took < ANSWER_WITHIN_SECONDS
    names = _metric_names(scrape.text)
    assert "crew_http_requests" in names
    assert "crew_runs" not in names
    assert health.status_code == 503
    assert after.json()["items"] == []
    log = (tmp_path / f"server-{port}.log").read_text()
    assert "internal server error" not in log
    assert "unhandled error" not in log
