"""Every Prometheus metric of the service, the functions that record them, and the scrape.

Two kinds of metric live here:

- counters, histograms and one gauge recorded where things happen (HTTP requests, node attempts,
  LLM calls, gate decisions, leases taken back, SSE subscribers). Under several API worker
  processes prometheus-client's multiprocess mode keeps them in files that the scrape sums up;
- gauges describing the database (runs and nodes by status, gates waiting, the worker queue),
  read from it when Prometheus scrapes, so every process reports the same truth once instead of
  each counting what it happened to see.
"""

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Seconds: an API answers in milliseconds; the tail up to 10 s shows a struggling database.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds: a node is an LLM call, from a fraction of a second to minutes.
NODE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Seconds: a human answers a gate in minutes, hours or days.
GATE_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0)

HTTP_REQUESTS = Counter(
    "crew_http_requests_total",
    "HTTP requests answered, by method, route template and status class (2xx, 4xx, 5xx).",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "crew_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)
NODE_DURATION = Histogram(
    "crew_node_duration_seconds",
    "Time one attempt of a node took, from its claim to its outcome, by role.",
    ["role"],
    buckets=NODE_BUCKETS,
)
LLM_TOKENS = Counter(
    "crew_llm_tokens_total",
    "Tokens of LLM calls, by provider, model and kind (prompt or completion).",
    ["provider", "model", "kind"],
)
LLM_COST = Counter(
    "crew_llm_cost_dollars_total",
    "What LLM calls cost in US dollars (LLM_PRICES), by provider and model.",
    ["provider", "model"],
)
GATE_WAIT = Histogram(
    "crew_gate_wait_seconds",
    "Time a gate waited from its opening to its decision, by decision.",
    ["decision"],
    buckets=GATE_BUCKETS,
)
LEASES_TAKEN_BACK = Counter(
    "crew_leases_taken_back_total",
    "Running nodes taken back because their worker's lease expired (a worker died or hung).",
)
NODE_ATTEMPTS_FAILED = Counter(
    "crew_node_attempts_failed_total",
    "Attempts of nodes that failed, as a worker's pass recorded them, by cause (provider, timeout,"
    " artifact_store, config, ...).",
    ["cause"],
)
SSE_SUBSCRIBERS = Gauge(
    "crew_sse_subscribers",
    "Event streams (Server-Sent Events) open now.",
    multiprocess_mode="livesum",
)

# Read from the database at each scrape (see `DatabaseGauges`).
RUNS = "crew_runs"
NODES = "crew_nodes"
GATES_WAITING = "crew_gates_waiting"
GATE_OLDEST_WAIT = "crew_gate_oldest_wait_seconds"
QUEUE_DEPTH = "crew_worker_queue_depth"


def status_class(status: int) -> str:
    """`2xx`, `4xx`, ... for an HTTP status."""
    return f"{status // 100}xx"


def record_http_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request under its route template (never its raw path)."""
    method = method if method in HTTP_METHODS else "other"
    HTTP_REQUESTS.labels(method, route, status_class(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def record_node_duration(role: str, seconds: float) -> None:
    """One attempt of a node of `role` ended (whatever its outcome) after `seconds`."""
    NODE_DURATION.labels(role).observe(seconds)


def record_llm_usage(
    provider: str, model: str, *, prompt_tokens: int, completion_tokens: int, cost: float
) -> None:
    """An LLM call answered with this usage and cost."""
    LLM_TOKENS.labels(provider, model, "prompt").inc(prompt_tokens)
    LLM_TOKENS.labels(provider, model, "completion").inc(completion_tokens)
    LLM_COST.labels(provider, model).inc(cost)


def record_gate_wait(seconds: float, *, decision: str) -> None:
    """A gate was decided (`approved` or `rejected`, by a person or its timeout) after `seconds`."""
    GATE_WAIT.labels(decision).observe(seconds)


def record_leases_taken_back(count: int) -> None:
    """`count` running nodes were taken back from workers whose lease expired."""
    LEASES_TAKEN_BACK.inc(count)


def record_failed_attempt(cause: str) -> None:
    """A worker's pass recorded an attempt that failed for `cause` (its event's cause)."""
    NODE_ATTEMPTS_FAILED.labels(cause).inc()


def sse_subscriber_opened() -> None:
    """An event stream started; call `sse_subscriber_closed` when it ends, however it ends."""
    SSE_SUBSCRIBERS.inc()


def sse_subscriber_closed() -> None:
    SSE_SUBSCRIBERS.dec()


@dataclass(frozen=True, slots=True)
class DatabaseGauges:
    """What the database holds now, read at scrape time."""

    runs_by_status: Mapping[str, int]
    nodes_by_status: Mapping[str, int]
    gates_waiting: int
    oldest_gate_wait_seconds: float
    ready_nodes: int

    def families(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily(RUNS, "Runs in the database, by status.", labels=["status"])
        for status, count in self.runs_by_status.items():
            runs.add_metric([status], count)
        nodes = GaugeMetricFamily(NODES, "Nodes in the database, by status.", labels=["status"])
        for status, count in self.nodes_by_status.items():
            nodes.add_metric([status], count)
        yield runs
        yield nodes
        yield GaugeMetricFamily(GATES_WAITING, "Gates waiting for a decision.", self.gates_waiting)
        yield GaugeMetricFamily(
            GATE_OLDEST_WAIT,
            "How long the oldest waiting gate has waited; 0 when none waits.",
            self.oldest_gate_wait_seconds,
        )
        yield GaugeMetricFamily(
            QUEUE_DEPTH, "Ready nodes of running runs, waiting for a worker.", self.ready_nodes
        )


class _Scrape:
    """What one scrape exposes: the recorded metrics, then the database's gauges if read."""

    def __init__(self, recorded: Collector, gauges: DatabaseGauges | None) -> None:
        self.recorded = recorded
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        yield from self.recorded.collect()
        if self.gauges is not None:
            yield from self.gauges.families()


def recorded_metrics(multiprocess_dir: Path | None) -> Collector:
    """Where a scrape reads the recorded metrics: this process's registry, or the files of every
    API worker process when they share `multiprocess_dir`."""
    if multiprocess_dir is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(multiprocess_dir))
    return registry


def render(recorded: Collector, gauges: DatabaseGauges | None) -> bytes:
    """The scrape's body in the Prometheus text format; without the database's gauges when
    there are none (the database is out of reach)."""
    return generate_latest(_Scrape(recorded, gauges))


def forget_this_process(multiprocess_dir: Path | None) -> None:
    """At a worker process's exit: its share of live gauges (SSE subscribers) stops counting."""
    if multiprocess_dir is not None:
        multiprocess.mark_process_dead(os.getpid(), str(multiprocess_dir))


@contextlib.contextmanager
def serving_recorded_metrics(host: str, port: int) -> Iterator[None]:
    """Serve this process's recorded metrics in the Prometheus text format on `host`:`port`
    (any path), from a thread, while the block runs: what a standalone worker, which has no
    HTTP server of its own, is scraped on. The database's gauges are the API's to serve."""
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
