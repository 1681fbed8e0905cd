"""/metrics in-process: HTTP metrics by route template, the database's gauges, recorded metrics."""

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from apps.api.app import create_app
from apps.core import metrics
from apps.core.database import SessionFactory, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.model.models import Gate
from apps.orchestrator.model.states import NodeStatus, RunStatus
from apps.orchestrator.reading import gauges
from tests.conftest import API_KEY
from tests.factories import create_node, create_run, minutes_ago

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"metrics_enabled": True})


async def scrape(client: httpx.AsyncClient) -> Samples:
    """Every sample of a scrape, by name and labels; the scrape sends no key."""
    answer = await client.get("/metrics", headers={"X-API-Key": ""})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_is_a_404_when_metrics_are_off(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_enabled": False}))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        answer = await http.get("/metrics")
    assert answer.status_code == 404
    assert answer.json() == {"detail": "Not Found"}


async def test_metrics_need_no_key_and_describe_every_metric(client: httpx.AsyncClient) -> None:
    answer = await client.get("/metrics", headers={"X-API-Key": ""})
    assert answer.status_code == 200
    families = {family.name for family in text_string_to_metric_families(answer.text)}
    assert {
        "crew_http_requests",
        "crew_http_request_duration_seconds",
        "crew_node_duration_seconds",
        "crew_llm_tokens",
        "crew_llm_cost_dollars",
        "crew_gate_wait_seconds",
        "crew_leases_taken_back",
        "crew_sse_subscribers",
        "crew_runs",
        "crew_nodes",
        "crew_gates_waiting",
        "crew_gate_oldest_wait_seconds",
        "crew_worker_queue_depth",
    } <= families


async def test_requests_are_counted_under_their_route_template(client: httpx.AsyncClient) -> None:
    run_id = uuid.uuid4()
    labels = {"method": "GET", "route": "/runs/{run_id}", "status": "4xx"}
    before = await scrape(client)
    for _ in range(2):
        assert (await client.get(f"/runs/{run_id}")).status_code == 404
    assert (await client.get("/runs")).status_code == 200
    after = await scrape(client)
    assert value(after, "crew_http_requests_total", **labels) == (
        value(before, "crew_http_requests_total", **labels) + 2
    )
    timed = {"method": "GET", "route": "/runs/{run_id}"}
    count = "crew_http_request_duration_seconds_count"
    assert value(after, count, **timed) == value(before, count, **timed) + 2
    assert value(after, "crew_http_requests_total", method="GET", route="/runs", status="2xx") >= 1
    assert not [key for key in after if str(run_id) in str(key)]


async def test_a_path_no_route_matches_makes_no_series(client: httpx.AsyncClient) -> None:
    assert (await client.get("/no/such/place")).status_code == 404
    assert (await client.get("/runs/")).status_code in (307, 404)
    routes = {dict(labels).get("route") for _, labels in await scrape(client)}
    assert routes.isdisjoint({"/no/such/place", "/runs/"})


async def test_an_unhandled_error_is_counted_as_a_5xx(app: FastAPI) -> None:
    async def explode(run_id: uuid.UUID) -> None:
        raise RuntimeError("a fault")

    app.add_api_route("/runs/{run_id}/explode", explode, methods=["POST"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        labels = {"method": "POST", "route": "/runs/{run_id}/explode", "status": "5xx"}
        before = value(await scrape(http), "crew_http_requests_total", **labels)
        answer = await http.post(f"/runs/{uuid.uuid4()}/explode")
        assert answer.status_code == 500
        assert answer.headers["x-request-id"]
        after = value(await scrape(http), "crew_http_requests_total", **labels)
    assert after == before + 1


async def test_database_gauges_are_read_at_scrape_time(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        running = await create_run(session, status=RunStatus.RUNNING)
        await create_run(session, status=RunStatus.SUCCEEDED)
        await create_node(session, running, key="a", position=0, status=NodeStatus.READY)
        waiting = await create_node(
            session, running, key="b", position=1, status=NodeStatus.WAITING_APPROVAL
        )
        session.add(Gate(run_id=running.id, node_id=waiting.id, opened_at=minutes_ago(30)))
    samples = await scrape(client)
    assert value(samples, "crew_runs", status="running") == 1
    assert value(samples, "crew_runs", status="succeeded") == 1
    assert ("crew_runs", frozenset({("status", "cancelled")})) in samples
    assert value(samples, "crew_nodes", status="ready") == 1
    assert value(samples, "crew_nodes", status="waiting_approval") == 1
    assert value(samples, "crew_worker_queue_depth") == 1
    assert value(samples, "crew_gates_waiting") == 1
    assert 29 * 60 < value(samples, "crew_gate_oldest_wait_seconds") < 35 * 60


async def test_when_counting_is_slow_the_terminal_statuses_are_counted_in_the_background(
    client: httpx.AsyncClient, sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every count is "slow" (over the limit): the first scrape waits for its count, the next
    # ones read the work in flight now and the terminal statuses as last counted.
    monkeypatch.setattr(gauges, "INLINE_LIMIT", -1.0)
    async with unit_of_work(sessions) as session:
        await create_run(session, status=RunStatus.FAILED)
    first = await scrape(client)
    assert value(first, "crew_runs", status="failed") == 1
    async with unit_of_work(sessions) as session:
        await create_run(session, status=RunStatus.RUNNING)
        await create_run(session, status=RunStatus.FAILED)
    second = await scrape(client)
    assert value(second, "crew_runs", status="running") == 1
    assert value(second, "crew_runs", status="failed") == 1
    assert ("crew_runs", frozenset({("status", "succeeded")})) in second
    # Once the interval has passed, a scrape starts the next count, which later scrapes report.
    monkeypatch.setattr(gauges, "BACKGROUND_MIN_INTERVAL", 0.0)
    for _ in range(100):
        if value(await scrape(client), "crew_runs", status="failed") == 2:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the terminal statuses were never counted again")


async def test_what_the_worker_records_shows_in_the_scrape(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    metrics.record_node_duration("writer", 1.5)
    metrics.record_llm_usage(
        "openai", "gpt-4o-mini", prompt_tokens=120, completion_tokens=30, cost=0.25
    )
    metrics.record_gate_wait(600, decision="approved")
    metrics.record_leases_taken_back(2)
    metrics.sse_subscriber_opened()
    during = await scrape(client)
    metrics.sse_subscriber_closed()
    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(during, name, **labels) - value(before, name, **labels)

    assert grew("crew_node_duration_seconds_count", role="writer") == 1
    assert grew("crew_node_duration_seconds_sum", role="writer") == 1.5
    model = {"provider": "openai", "model": "gpt-4o-mini"}
    assert grew("crew_llm_tokens_total", kind="prompt", **model) == 120
    assert grew("crew_llm_tokens_total", kind="completion", **model) == 30
    assert grew("crew_llm_cost_dollars_total", **model) == pytest.approx(0.25)
    assert grew("crew_gate_wait_seconds_bucket", decision="approved", le="900.0") == 1
    assert grew("crew_gate_wait_seconds_bucket", decision="approved", le="300.0") == 0
    assert grew("crew_leases_taken_back_total") == 2
    assert grew("crew_sse_subscribers") == 1
    assert value(after, "crew_sse_subscribers") == value(before, "crew_sse_subscribers")


async def test_every_answer_echoes_a_request_id(client: httpx.AsyncClient) -> None:
    given = await client.get("/runs", headers={"X-Request-ID": "trace-42.a:b_c"})
    assert given.headers["x-request-id"] == "trace-42.a:b_c"
    made = await client.get("/runs", headers={"X-API-Key": ""})
    assert made.status_code == 401
    assert len(made.headers["x-request-id"]) == 32


@pytest.mark.parametrize("bad", ["x" * 129, "a b", "evil\u00e9", "line\\nbreak", "{json}"])
async def test_an_insane_request_id_is_replaced(client: httpx.AsyncClient, bad: str) -> None:
    answer = await client.get("/runs", headers={"X-Request-ID": bad.encode("latin-1")})
    assert answer.headers["x-request-id"] != bad
    assert len(answer.headers["x-request-id"]) == 32
    assert API_KEY not in answer.headers["x-request-id"]
