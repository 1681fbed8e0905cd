"""Metrics, Sentry, request ids and logs through a real uvicorn: a fault reaches a Sentry endpoint
on loopback with its tags and without secrets, expected outcomes do not, event streams keep
streaming with everything on and are counted while open, and several worker processes report one
set of metrics."""

import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from tests.chat_server import Script, chat_server
from tests.conftest import API_KEY, ROOT
from tests.instrumented_app import BEFORE_THE_FAULT, CREW_FAULT_MESSAGE, FAULT_MESSAGE
from tests.sentry_sink import sentry_sink
from tests.servers import api_process, free_port

OPENAI_KEY = "sk-observability-test-0123456789abcdef"
PROMPT = "TOP SECRET PROMPT: the merger with Globex closes on Friday"
HEADERS = {"X-API-Key": API_KEY}


@contextmanager
def instrumented_api(database_url: str, workdir: Path, **settings: str) -> Iterator[str]:
    """The API with the tests' streaming and failing routes, served by uvicorn; its base URL."""
    port = free_port()
    arguments = (
        "-m", "uvicorn", "tests.instrumented_app:create_instrumented_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    with api_process(database_url, workdir, port, arguments=arguments, **settings):
        yield f"http://127.0.0.1:{port}"


def scrape(base_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = httpx.get(f"{base_url}/metrics")
    assert answer.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def fail_in_a_route(base_url: str, request_id: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Call the failing route with a key, a cookie and a prompt in its body; its run and node."""
    run_id, node_id = uuid.uuid4(), uuid.uuid4()
    answer = httpx.post(
        f"{base_url}/runs/{run_id}/nodes/{node_id}/fault",
        headers={**HEADERS, "X-Request-ID": request_id, "Cookie": "session=cookie-secret"},
        json={"prompt": PROMPT, "sidecar": {"prompts": {"user": PROMPT}}},
    )
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal server error"}
    assert answer.headers["x-request-id"] == request_id
    return run_id, node_id


def wait_for_run(base_url: str, run_id: str, statuses: tuple[str, ...]) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while (run := httpx.get(f"{base_url}/runs/{run_id}", headers=HEADERS).json())[
        "status"
    ] not in statuses:
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    return run


def test_a_fault_in_a_route_reaches_sentry_tagged_and_without_secrets(
    migrated_database: str, tmp_path: Path
) -> None:
    with (
        sentry_sink() as (sink, dsn),
        instrumented_api(
            migrated_database,
            tmp_path,
            SENTRY_DSN=dsn,
            SENTRY_ENV="test-env",
            RELEASE="crew@1.2.3",
            METRICS_ENABLED="1",
            OPENAI_API_KEY=OPENAI_KEY,
        ) as base_url,
    ):
        run_id, node_id = fail_in_a_route(base_url, "fault-request-1")
        [event] = sink.wait_for_events(1)
        received = b"".join(sink.bodies).decode()
    assert event["tags"]["request_id"] == "fault-request-1"
    assert event["tags"]["run_id"] == str(run_id)
    assert event["tags"]["node_id"] == str(node_id)
    assert (event["environment"], event["release"]) == ("test-env", "crew@1.2.3")
    assert FAULT_MESSAGE in json.dumps(event["exception"])
    assert event["transaction"] == "/runs/{run_id}/nodes/{node_id}/fault"
    assert event["request"]["method"] == "POST"
    assert event["request"]["url"] == f"{base_url}/runs/{run_id}/nodes/{node_id}/fault"
    headers = {name.lower(): value for name, value in event["request"]["headers"].items()}
    assert headers["x-request-id"] == "fault-request-1"
    assert headers.get("x-api-key", "[Filtered]") == "[Filtered]"
    assert "data" not in event["request"]
    for secret in (API_KEY, OPENAI_KEY, PROMPT, "cookie-secret"):
        assert secret not in received


def test_an_event_carries_the_breadcrumbs_of_its_own_request_only(
    migrated_database: str, tmp_path: Path
) -> None:
    """Each request has a Sentry scope of its own: what another request logged (or the server
    logged as it started) is not in the fault's event, what its own request logged is."""
    with (
        sentry_sink() as (sink, dsn),
        instrumented_api(migrated_database, tmp_path, SENTRY_DSN=dsn) as base_url,
    ):
        for note in ("from an earlier request", "from another one"):
            noted = httpx.post(f"{base_url}/note", headers=HEADERS, json={"note": note})
            assert noted.status_code == 204
        fail_in_a_route(base_url, "breadcrumbs-1")
        [event] = sink.wait_for_events(1)
    messages = [crumb.get("message") for crumb in event["breadcrumbs"]["values"]]
    assert messages == [BEFORE_THE_FAULT]


def test_expected_outcomes_send_nothing_to_sentry(migrated_database: str, tmp_path: Path) -> None:
    """4xx answers, a provider's 429 and a node failing by its retry policy are not faults: the
    only event that arrives is the fault triggered last."""
    script = Script(replies=deque([("status", 429), ("status", 503)]))
    dag = {"type": "dag", "nodes": [{"key": "write", "role": "writer", "prompt": PROMPT}]}
    dag["nodes"][0]["max_attempts"] = 2
    with (
        chat_server(script) as llm_url,
        sentry_sink() as (sink, dsn),
        instrumented_api(
            migrated_database,
            tmp_path,
            SENTRY_DSN=dsn,
            WORKER_IN_API="1",
            LLM_DEFAULT_PROVIDER="openai",
            LLM_DEFAULT_MODEL="gpt-4o-mini",
            OPENAI_BASE_URL=llm_url,
            OPENAI_API_KEY=OPENAI_KEY,
        ) as base_url,
    ):
        assert httpx.get(f"{base_url}/runs/{uuid.uuid4()}", headers=HEADERS).status_code == 404
        assert httpx.get(f"{base_url}/runs", headers={"X-API-Key": "wrong"}).status_code == 401
        task = {"title": "Rate limited", "task_spec": dag}
        invalid = {**task, "task_spec": {"type": "dag", "nodes": []}}
        assert httpx.post(f"{base_url}/tasks", headers=HEADERS, json=invalid).status_code == 422
        submitted = httpx.post(f"{base_url}/tasks", headers=HEADERS, json=task)
        run = wait_for_run(base_url, submitted.json()["id"], ("succeeded", "failed"))
        fail_in_a_route(base_url, "the-only-fault")
        sink.wait_for_events(1)
        time.sleep(0.5)
        events = sink.events()
    assert run["status"] == "failed"
    assert "HTTP 503" in str(run["error"])
    assert len(script.requests) == 2
    assert [event["tags"]["request_id"] for event in events] == ["the-only-fault"]


def test_with_no_dsn_a_fault_is_a_json_500_and_nothing_is_sent(
    migrated_database: str, tmp_path: Path
) -> None:
    with (
        sentry_sink() as (sink, _dsn),
        instrumented_api(migrated_database, tmp_path, SENTRY_ENV="test-env") as base_url,
    ):
        fail_in_a_route(base_url, "no-dsn-fault")
        time.sleep(1)
    assert sink.bodies == []


def test_a_bare_crew_error_is_logged_and_reported_like_any_fault(
    migrated_database: str, tmp_path: Path
) -> None:
    run_id = uuid.uuid4()
    with (
        sentry_sink() as (sink, dsn),
        instrumented_api(migrated_database, tmp_path, SENTRY_DSN=dsn) as base_url,
    ):
        answer = httpx.get(
            f"{base_url}/runs/{run_id}/crew-fault",
            headers={**HEADERS, "X-Request-ID": "crew-fault-1"},
        )
        events = sink.wait_for_events(1)
        time.sleep(0.5)
        events = sink.events()
    assert answer.status_code == 500
    assert answer.json() == {"detail": CREW_FAULT_MESSAGE}
    [event] = events
    assert event["tags"]["request_id"] == "crew-fault-1"
    assert event["tags"]["run_id"] == str(run_id)
    assert CREW_FAULT_MESSAGE in json.dumps(event["exception"])
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert f"fault on GET /runs/{run_id}/crew-fault: {CREW_FAULT_MESSAGE}\nTraceback" in log
    assert f"apps.core.errors.CrewError: {CREW_FAULT_MESSAGE}" in log


NODE_FAULT = textwrap.dedent(
    """
    import logging, sys
    import sentry_sdk
    from apps.core.error_reporting import init_sentry, report_run_error
    from apps.core.logs import log_context
    from apps.core.settings import load_settings

    dsn, run_id, node_id, prompt = sys.argv[1:]
    init_sentry(load_settings(_env_file=None, sentry_dsn=dsn, api_key="test-key"))
    logger = logging.getLogger("apps.orchestrator.worker")
    with log_context(run_id=run_id, node_id=node_id):
        try:
            raise RuntimeError("reported by the worker")
        except RuntimeError as error:
            report_run_error(error, run_id=run_id, node_id=node_id)
            logger.exception("node failed unexpectedly")
        try:
            raise KeyError("only logged by the worker")
        except KeyError:
            logger.exception("node failed unexpectedly")
    sentry_sdk.flush()
    """
)


def test_an_unexpected_node_error_reaches_sentry_with_its_run_and_node() -> None:
    run_id, node_id = str(uuid.uuid4()), str(uuid.uuid4())
    with sentry_sink() as (sink, dsn):
        subprocess.run(
            [sys.executable, "-c", NODE_FAULT, dsn, run_id, node_id, PROMPT],
            cwd=ROOT,
            check=True,
            timeout=60,
        )
        events = sink.wait_for_events(2)
    assert len(events) == 2
    for event in events:
        assert (event["tags"]["run_id"], event["tags"]["node_id"]) == (run_id, node_id)
    messages = [event["exception"]["values"][-1]["value"] for event in events]
    assert messages == ["reported by the worker", "'only logged by the worker'"]


def test_an_artifact_store_that_cannot_be_written_reaches_sentry_with_its_run_and_node(
    migrated_database: str, tmp_path: Path
) -> None:
    """A deployment's fault the worker turns into a failed attempt is reported all the same,
    once: the node and the run fail by their retry policy, which reports nothing more."""
    not_a_directory = tmp_path / "artifacts-file"
    not_a_directory.write_text("the store's directory is a file")
    node = {"key": "only", "role": "writer", "prompt": PROMPT, "max_attempts": 1}
    task = {"title": "Nowhere to write", "task_spec": {"type": "dag", "nodes": [node]}}
    with (
        sentry_sink() as (sink, dsn),
        instrumented_api(
            migrated_database,
            tmp_path,
            SENTRY_DSN=dsn,
            WORKER_IN_API="1",
            ARTIFACTS_DIR=str(not_a_directory),
        ) as base_url,
    ):
        submitted = httpx.post(f"{base_url}/tasks", headers=HEADERS, json=task)
        run = wait_for_run(base_url, submitted.json()["id"], ("succeeded", "failed"))
        [node_row] = httpx.get(f"{base_url}/runs/{run['id']}/nodes", headers=HEADERS).json()[
            "items"
        ]
        sink.wait_for_events(1)
        time.sleep(0.5)
        events = sink.events()
    assert run["status"] == "failed"
    [event] = events
    assert (event["tags"]["run_id"], event["tags"]["node_id"]) == (run["id"], node_row["id"])
    assert event["level"] == "error"
    assert event["logentry"]["formatted"] == (
        "attempt 1 of 1 of node 'only' failed (artifact_store), the node failed:"
        " artifact store: the artifact store failed: Not a directory"
    )
    assert PROMPT not in json.dumps(event)


def test_a_stream_flows_chunk_by_chunk_with_metrics_and_sentry_on(
    migrated_database: str, tmp_path: Path
) -> None:
    route = {"method": "GET", "route": "/runs/{run_id}/events/stream", "status": "2xx"}
    settings = {"SENTRY_DSN": "", "METRICS_ENABLED": "1", "DEMO_LATENCY_MS": "300"}
    with (
        sentry_sink() as (sink, dsn),
        instrumented_api(
            migrated_database, tmp_path, **(settings | {"SENTRY_DSN": dsn})
        ) as base_url,
    ):
        task = {"title": "Streamed", "task_spec": {"type": "demo"}}
        run_id = httpx.post(f"{base_url}/tasks", headers=HEADERS, json=task).json()["id"]
        arrivals: list[float] = []
        with httpx.stream(
            "GET", f"{base_url}/runs/{run_id}/events/stream", headers=HEADERS, timeout=30
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["x-request-id"]
            for chunk in stream.iter_text():
                arrivals.append(time.monotonic())
                assert "event: " in chunk or chunk.startswith(":")
                if len(arrivals) == 1:
                    during = scrape(base_url)
        after = scrape(base_url)
    # plan, the writers, the review and the assembly, 0.3 s each, one after the other
    assert len(arrivals) >= 4
    assert arrivals[-1] - arrivals[0] >= 3 * 0.3 * 0.8
    assert during[("crew_sse_subscribers", frozenset())] == 1
    assert after[("crew_sse_subscribers", frozenset())] == 0
    assert after[("crew_http_requests_total", frozenset(route.items()))] == 1
    assert sink.events() == []


def test_open_event_streams_are_what_the_gauge_says(migrated_database: str, tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    gauge = ("crew_sse_subscribers", frozenset())
    opened = []
    with (
        api_process(migrated_database, tmp_path, port, METRICS_ENABLED="1"),
        httpx.Client(base_url=base_url, headers=HEADERS, timeout=30) as client,
    ):
        with ExitStack() as streams:
            for _ in range(3):
                opened.append(scrape(base_url)[gauge])
                streams.enter_context(client.stream("GET", "/events/stream"))
            opened.append(scrape(base_url)[gauge])
        deadline = time.monotonic() + 10
        while (closed := scrape(base_url)[gauge]) != 0:
            assert time.monotonic() < deadline, closed
            time.sleep(0.1)
    assert opened == [0, 1, 2, 3]


STRONG_KEY = "observability-test-key-4f9d2a7c1e"


def _stale_counter(directory: Path) -> None:
    """The file a worker process of an earlier start left: 1,000 GET /runs it answered."""
    stale = MmapedDict(str(directory / "counter_999999.db"))
    labels = ["method", "route", "status"]
    key = mmap_key(
        "crew_http_requests",
        "crew_http_requests_total",
        labels,
        ["GET", "/runs", "2xx"],
        "HTTP requests answered, by method, route template and status class (2xx, 4xx, 5xx).",
    )
    stale.write_value(key, 1000.0, 0.0)
    stale.close()


def test_several_worker_processes_report_one_set_of_metrics(
    migrated_database: str, tmp_path: Path
) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    _stale_counter(shared)
    port = free_port()
    headers = {"X-API-Key": STRONG_KEY}
    with api_process(
        migrated_database,
        tmp_path,
        port,
        arguments=("-m", "apps.api", "--prod"),
        API_KEY=STRONG_KEY,
        WEB_CONCURRENCY="2",
        METRICS_ENABLED="1",
        PROMETHEUS_MULTIPROC_DIR=str(shared),
        LOG_FORMAT="json",
    ):
        base_url = f"http://127.0.0.1:{port}"
        task = {"title": "Counted once", "task_spec": {"type": "demo"}}
        assert httpx.post(f"{base_url}/tasks", headers=headers, json=task).status_code == 202
        with httpx.Client(base_url=base_url, headers=headers) as client:
            for index in range(40):
                client.get("/runs", headers={"X-Request-ID": f"multi-{index}"})
        scrapes = [scrape(base_url) for _ in range(6)]
        writers = {path.name.rsplit("_", 1)[-1] for path in shared.glob("counter_*.db")}
    runs_route = frozenset({"method": "GET", "route": "/runs", "status": "2xx"}.items())
    for samples in scrapes:
        assert samples[("crew_http_requests_total", runs_route)] == 40
        runs = sum(v for (name, _), v in samples.items() if name == "crew_runs")
        assert runs == 1
    assert len(writers) == 2
    log_lines = (tmp_path / f"server-{port}.log").read_text().splitlines()
    records = [json.loads(line) for line in log_lines if line.strip()]
    assert any(record.get("request_id") == "multi-7" for record in records)
    assert STRONG_KEY not in "\n".join(log_lines)
