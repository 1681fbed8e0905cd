"""Live event streams: hundreds of SSE subscribers on one run, every event to every one of them.

Per backend (SQLite, and PostgreSQL when its server answers), `--repeat` times (3), each time on
a fresh migrated database:

1. A real API process (`python -m apps.api`, WORKER_IN_API=1, DEMO_LATENCY_MS=`--latency-ms`,
   LOG_LEVEL=warning, otherwise the service's defaults) serves it; its RSS is read ("before").
2. A `dag` task of `--nodes` (500) nodes on the demo provider is POSTed, its root gated before it
   starts, so the run waits while the subscribers connect. About 4 events a node (ready, started,
   artifact.created, succeeded): about 2,000 events. `--shape layered` (the default): after the
   root, layers of 4 nodes (RUN_CONCURRENCY's default), each on every node of the layer before,
   a steady flow of events. `--shape wide`: every other node on the root and a last node on all
   of them, so the root's success makes 498 nodes ready in one burst.
3. `--subscribers` (1,000) clients open `GET /runs/{id}/events/stream` at once; once every one has
   its response headers, the gate is approved, and they read until the server ends each stream
   after `run.succeeded`. The clients are bare asyncio protocols with httptools' parser in this
   process, keeping each chunk with its arrival time and reading the events afterwards, so that
   the measuring side adds little delay; the server's RSS is sampled every 0.1 s ("during").
4. Checks: every subscriber received exactly the run's events as `GET /events?run_id=` lists
   them, in order, each once, and its stream ended; subscriber 0's `data:` equal the polled
   events. Delivery latency is an event's arrival minus its `ts` (one clock, one host), "live"
   for the events written after their subscriber connected (all but the few before the gate,
   which came by replay), "all" for every event.

Targets: the median of the runs' live p99 at most 100 ms, the median of their peak RSS at most
150 MB, and every subscriber gets every event. The machine's load is printed beside them.

    .venv/bin/python -m bench.streams                        # both backends, ~3 min each
    .venv/bin/python -m bench.streams --backend sqlite --shape wide --repeat 1
    .venv/bin/python -m bench.streams --backend sqlite --subscribers 100 --nodes 100
    .venv/bin/python -m bench.streams --smoke                # seconds: does it still run?

Only 127.0.0.1 is used. Files live in bench/.work/ (removed at the end, the server's log kept);
PostgreSQL databases are new `bench_<random>` ones, dropped at the end. Exit status: 0 when every
target passes, 1 when one fails, 2 when the benchmark itself could not run.
"""

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httptools
import httpx

from apps.orchestrator.plans.task_specs import MAX_NODES
from bench.harness import (
    API_COMMAND,
    API_KEY,
    HOST,
    SMOKE_HELP,
    WORK,
    WORKER_COMMAND,
    BenchError,
    dag_node,
    free_port,
    fresh_database,
    machine_state,
    run,
    scratch_dir,
    servers,
    service_env,
    spawn,
    wait_ready,
    wide_dag,
)

TARGET_P99_MS = 100.0
TARGET_RSS_MB = 150.0
STREAM_TIMEOUT = 600.0
GATE_TIMEOUT = 60.0
LAYER_WIDTH = 4  # RUN_CONCURRENCY's default: a layer runs at once
RSS_SAMPLE_SECONDS = 0.1


# --- the server ----------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """The peak RSS of a process, sampled on a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def api_process(
    backend: str, url: str, workdir: Path, latency_ms: int, standalone_worker: bool
) -> Iterator[tuple[str, int]]:
    """`python -m apps.api` with the worker in it, or beside it in a process of its own; the
    API's base URL and pid."""
    port = free_port()
    env = service_env(
        url,
        HOST=HOST,
        PORT=str(port),
        ARTIFACTS_DIR=str(workdir / "artifacts"),
        DEMO_LATENCY_MS=str(latency_ms),
        WORKER_IN_API="0" if standalone_worker else "1",
    )
    log = WORK / f"streams-server-{backend}.log"
    with contextlib.ExitStack() as stack:
        process = stack.enter_context(spawn(API_COMMAND, env, workdir, log))
        if standalone_worker:
            worker_log = WORK / f"streams-worker-{backend}.log"
            stack.enter_context(spawn(WORKER_COMMAND, env, workdir, worker_log))
        wait_ready(process, f"http://{HOST}:{port}", log)
        yield f"http://{HOST}:{port}", process.pid


# --- the subscribers -----------------------------------------------------------------------------


class Subscriber(asyncio.Protocol):
    """One SSE client. While the run goes on it only keeps each chunk with its arrival time, so
    that reading 500 streams costs the measuring process little; `parse` reads the events after.
    """

    def __init__(self, request: bytes, keep_data: bool) -> None:
        self.request = request
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[tuple[float, bytes]] = []
        self.ids: list[int] = []
        self.arrivals: list[float] = []
        self.data: list[bytes] | None = [] if keep_data else None
        self.status = 0
        self.connected_at = 0.0
        self.ended = False
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._now = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._now = time.time()
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.connected_at = time.time()
        self.connected.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append((self._now, body))

    def on_message_complete(self) -> None:
        self.ended = True
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.connected, self.closed):
            if not future.done():
                future.set_result(None)

    def parse(self) -> None:
        """Each event's id, and the arrival of the chunk that completed it."""
        pending = b""
        for arrived, body in self.chunks:
            *blocks, pending = (pending + body).split(b"\n\n")
            for block in blocks:
                at = block.rfind(b"\nid: ")
                if at < 0:
                    continue  # a heartbeat
                self.ids.append(int(block[at + 5 :]))
                self.arrivals.append(arrived)
                if self.data is not None:
                    self.data.append(block[block.find(b"\ndata: ") + 7 : at])
        self.chunks = []


async def open_streams(base_url: str, run_id: str, count: int) -> list[Subscriber]:
    """`count` streams on the run, opened at once; returns when every one has its headers."""
    host, port = base_url.removeprefix("http://").split(":")
    request = (
        f"GET /runs/{run_id}/events/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"X-API-Key: {API_KEY}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()

    async def connect(index: int) -> Subscriber:
        _, subscriber = await loop.create_connection(
            lambda: Subscriber(request, keep_data=index == 0), host, int(port)
        )
        await subscriber.connected
        return subscriber

    async with asyncio.timeout(STREAM_TIMEOUT):
        return await asyncio.gather(*(connect(i) for i in range(count)))


async def read_to_the_end(subscribers: list[Subscriber]) -> None:
    async with asyncio.timeout(STREAM_TIMEOUT):
        await asyncio.gather(*(subscriber.closed for subscriber in subscribers))
    for subscriber in subscribers:
        subscriber.parse()


# --- one measurement -----------------------------------------------------------------------------


async def polled_events(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"run_id": run_id, "limit": 200}
    while True:
        page = (await client.get("/events", params=params)).raise_for_status().json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]


@dataclass(frozen=True, slots=True)
class Result:
    """One run's figures; latencies in ms."""

    events: int
    messages: int
    complete: int
    run_seconds: float
    connect_seconds: float
    server_cpu: float
    rss_before: float
    rss_peak: float
    live: tuple[float, float, float, float]  # p50, p90, p99, max of events after connecting
    every_p99: float
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems and self.live[2] < TARGET_P99_MS


def percentile(values: Sequence[float], which: int) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[which - 1]


def check(subscribers: list[Subscriber], polled: list[dict[str, Any]]) -> list[str]:
    """What went wrong: a subscriber that missed, repeated or reordered an event, or whose stream
    did not end; data that differs from GET /events."""
    expected = [event["id"] for event in polled]
    problems = [
        f"subscriber {i}: HTTP {s.status}, {len(s.ids)} events, ended={s.ended}"
        for i, s in enumerate(subscribers)
        if s.status != 200 or s.ids != expected or not s.ended
    ]
    first = subscribers[0].data or []
    if [json.loads(data) for data in first] != polled:
        problems.append("subscriber 0: the events' data differ from GET /events")
    return problems


def latencies(subscribers: list[Subscriber], polled: list[dict[str, Any]]) -> tuple[list, list]:
    """Arrival minus `ts` in ms: of the events written after their subscriber had connected,
    and of every event (those written before it connected came by replay)."""
    written = {event["id"]: datetime.fromisoformat(event["ts"]).timestamp() for event in polled}
    live, every = [], []
    for subscriber in subscribers:
        for event_id, arrived in zip(subscriber.ids, subscriber.arrivals, strict=True):
            delay = (arrived - written[event_id]) * 1000
            every.append(delay)
            if written[event_id] >= subscriber.connected_at:
                live.append(delay)
    return live, every


def gated_dag(nodes: int, shape: str) -> dict[str, Any]:
    """A root gated before it starts (so the run waits for the subscribers), then either layers
    of LAYER_WIDTH nodes, each on every node of the layer before (a steady flow of events), or
    all the other nodes on the root and a last node on all of them (one burst of them ready)."""
    if shape == "wide":
        spec = wide_dag(nodes)
    else:
        spec = [dag_node(0, [])]
        for index in range(1, nodes):
            layer_start = (index - 1) // LAYER_WIDTH * LAYER_WIDTH + 1
            previous = range(max(layer_start - LAYER_WIDTH, 1), layer_start) or [0]
            spec.append(dag_node(index, list(previous)))
    spec[0]["gate"] = {"required": True, "when": "before"}
    return {"title": f"streams {shape} {nodes}", "task_spec": {"type": "dag", "nodes": spec}}


async def wait_for_the_gate(client: httpx.AsyncClient, run_id: str) -> None:
    async with asyncio.timeout(GATE_TIMEOUT):
        while (await client.get(f"/runs/{run_id}")).json()["status"] != "waiting":  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def stream_one_run(base_url: str, pid: int, args: argparse.Namespace) -> Result:
    limits = httpx.Limits(max_connections=4)
    headers = {"X-API-Key": API_KEY}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60, limits=limits, trust_env=False
    ) as client:
        (await client.get("/runs")).raise_for_status()
        rss_before, cpu_before = rss_mb(pid), cpu_seconds(pid)
        with RssSampler(pid) as sampler:
            answer = (
                await client.post("/tasks", json=gated_dag(args.nodes, args.shape))
            ).raise_for_status()
            run_id = answer.json()["id"]
            await wait_for_the_gate(client, run_id)
            subscribers = await open_streams(base_url, run_id, args.subscribers)
            approved = time.perf_counter()
            (await client.post(f"/runs/{run_id}/approve", json={})).raise_for_status()
            await read_to_the_end(subscribers)
            run_seconds = time.perf_counter() - approved
        server_cpu = cpu_seconds(pid) - cpu_before
        polled = await polled_events(client, run_id)
    live, every = latencies(subscribers, polled)
    connected = [subscriber.connected_at for subscriber in subscribers]
    expected = [event["id"] for event in polled]
    return Result(
        events=len(polled),
        messages=len(every),
        complete=sum(s.ids == expected and s.ended for s in subscribers),
        run_seconds=run_seconds,
        connect_seconds=max(connected) - min(connected),
        server_cpu=server_cpu,
        rss_before=rss_before,
        rss_peak=max(sampler.peak, rss_before),
        live=(*(percentile(live, n) for n in (50, 90, 99)), max(live, default=float("nan"))),
        every_p99=percentile(every, 99),
        problems=check(subscribers, polled),
    )


def measure(backend: str, server: str | None, args: argparse.Namespace) -> Result:
    """One run on a fresh database and server."""
    with (
        fresh_database(backend, server) as url,
        scratch_dir("streams") as workdir,
        api_process(backend, url, workdir, args.latency_ms, args.standalone_worker) as (
            base_url,
            pid,
        ),
    ):
        return asyncio.run(stream_one_run(base_url, pid, args))


ROW = "{:<7}{:>9}{:>10}{:>8}{:>10}{:>8}{:>16}{:>9}{:>8}{:>8}{:>8}{:>10}"


def print_results(backend: str, results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\n{backend}: {args.subscribers} SSE subscribers on one {args.nodes}-node dag run "
        f"({results[0].events} events), DEMO_LATENCY_MS={args.latency_ms}, "
        f"{'a standalone worker process' if args.standalone_worker else 'worker in the API'}"
    )
    print(
        ROW.format(
            "run",
            "messages",
            "complete",
            "run s",
            "connect s",
            "CPU s",
            "RSS before/peak",
            "live p50",
            "p90",
            "p99",
            "max",
            "all p99",
        )
    )
    for index, r in enumerate(results, 1):
        print(
            ROW.format(
                index,
                r.messages,
                f"{r.complete}/{args.subscribers}",
                f"{r.run_seconds:.1f}",
                f"{r.connect_seconds:.2f}",
                f"{r.server_cpu:.1f}",
                f"{r.rss_before:.0f} / {r.rss_peak:.0f} MB",
                *(f"{v:.1f}" for v in r.live),
                f"{r.every_p99:.1f}",
            )
        )
    p99 = statistics.median(r.live[2] for r in results)
    failed = "not judged" if args.smoke else "FAIL"
    verdict = "PASS" if p99 <= TARGET_P99_MS else failed
    print(f"  median live p99 {p99:.1f} ms <= {TARGET_P99_MS:g} ms (target)  {verdict}")
    rss = statistics.median(r.rss_peak for r in results)
    verdict = "PASS" if rss <= TARGET_RSS_MB else failed
    print(f"  median peak RSS {rss:.0f} MB <= {TARGET_RSS_MB:g} MB (target)  {verdict}")
    print(f"  machine at the end: {machine_state()}")
    problems = [problem for r in results for problem in r.problems]
    verdict = "FAIL" if problems else "PASS"
    print(f"  every subscriber got every event, in every run (target)  {verdict}")
    for problem in problems[:5]:
        print(f"  problem: {problem}")


def passed(results: list[Result]) -> bool:
    p99 = statistics.median(r.live[2] for r in results)
    rss = statistics.median(r.rss_peak for r in results)
    return p99 <= TARGET_P99_MS and rss <= TARGET_RSS_MB and not any(r.problems for r in results)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--subscribers", type=int, default=1000, help="streams on the run")
    parser.add_argument(
        "--nodes", type=int, default=MAX_NODES, help=f"nodes of the dag (3-{MAX_NODES})"
    )
    parser.add_argument("--latency-ms", type=int, default=100, help="DEMO_LATENCY_MS of the server")
    parser.add_argument("--repeat", type=int, default=3, help="runs per backend (median)")
    parser.add_argument(
        "--shape", choices=("layered", "wide"), default="layered", help="of the dag, see above"
    )
    parser.add_argument(
        "--standalone-worker",
        action="store_true",
        help="run the nodes in a worker process beside the API (WORKER_IN_API=0): events then "
        "cross processes (NOTIFY on PostgreSQL, EVENT_POLL_SECONDS on SQLite)",
    )
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        args.subscribers, args.nodes, args.repeat, args.latency_ms = 5, 6, 1, 10
    if not 3 <= args.nodes <= MAX_NODES or not 1 <= args.subscribers <= 5000 or args.repeat < 1:
        parser.error(f"--nodes 3-{MAX_NODES}, --subscribers 1-5000, --repeat 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    reports = []
    for backend, server in servers(args.backend):
        results = []
        for repeat in range(1, args.repeat + 1):
            results.append(measure(backend, server, args))
            r = results[-1]
            print(
                f"== {backend} [{repeat}/{args.repeat}]: {r.complete}/{args.subscribers} complete,"
                f" live p50 {r.live[0]:.1f} ms p99 {r.live[2]:.1f} ms",
                flush=True,
            )
        reports.append((backend, results))
    for backend, results in reports:
        print_results(backend, results, args)
    if args.smoke:
        # Latencies on a few events mean nothing; that every subscriber got every event does.
        print("\nsmoke run: the latency target is not judged")
        return 0 if not any(r.problems for _, results in reports for r in results) else 1
    return 0 if all(passed(results) for _, results in reports) else 1


if __name__ == "__main__":
    run(main)
