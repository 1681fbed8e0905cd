"""Growth: each figure at 10x, 100x and 1,000x the work, and whether it stays flat.

Three kinds of work, each grown from a base by 10x, 100x and 1,000x, on SQLite and PostgreSQL
(when its server answers), each point on a fresh migrated database:

1. Runs in the database (`bench.read_api`'s seeding and server): 1,000 realistic runs with their
   nodes and 10,000 events, then lean bulk runs older than them up to 10,000 runs in all (the
   base), 100,000, 1,000,000 and, with `--max-runs 10000000`, ten million (about 10 minutes of
   seeding on SQLite and 14 on PostgreSQL; 1,000,000 is the default largest). Figures: p99 at
   c=1 of the runs first page, the page after 90% of the rows, `?status=failed` and `?q=` (a
   common and a rare title word), and the first page's req/s at c=32.
2. Nodes in a drain (`bench.orchestration`'s in-process drain, artifacts on the disk): 5 nodes
   (the base), 50, 500 and 5,000, wide (a root, the rest on it, a last one on all) and deep (a
   chain). A plan holds at most 500 nodes (MAX_NODES), so 5,000 is ten runs of 500 drained
   together. Figure: ms a node. And the claim: one claim's ms with 10, 100, 1,000 and 10,000
   ready nodes queued.
3. Subscribers on one run (`bench.streams`): 1, 10, 100 and 1,000 SSE subscribers on one
   2,000-event run. Figures: live p99 ms, peak RSS of the API, and the API's CPU per message
   delivered.

Each figure's cost (ms, MB, CPU; for req/s the inverse) at the largest work is compared with its
base, the smallest: it "grows" when it costs more than 1.2x the base, "falls" when it costs less
than 1/1.2 of it (fixed costs spread over more work), and is "flat" otherwise.

    .venv/bin/python -m bench.growth                          # both backends, ~15 min
    .venv/bin/python -m bench.growth --backend sqlite --only subscribers
    .venv/bin/python -m bench.growth --max-runs 10000000      # + ten million runs, ~25 min more
    .venv/bin/python -m bench.growth --smoke                  # seconds: does it still run?

Exit status: 0 when every point ran and its checks held (every run succeeded, every subscriber
got every event, every page was full), 2 when the benchmark could not run. Growth itself is
reported, not judged: the issue asks which figures stay flat and why, in docs/benchmarks.md.
"""

import argparse
import asyncio
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from apps.core.settings import Settings
from apps.orchestrator.plans.task_specs import MAX_NODES, TaskRequest
from bench import orchestration, read_api, streams
from bench.harness import SMOKE_HELP, WORK, BenchError, fresh_database, machine_state, run, servers

FLAT_RATIO = 1.2
STEPS = (1, 10, 100, 1000)
SMOKE_STEPS = (1, 10)

RUNS_BASE = 10_000
REALISTIC_RUNS = 1_000
REALISTIC_EVENTS = 10_000
DEFAULT_MAX_RUNS = 1_000_000
READ_ENDPOINTS = (
    "runs first page c=1",
    "runs deep page c=1",
    "runs failed c=1",
    "runs q common c=1",
    "runs q rare c=1",
)

NODES_BASE = 5
CLAIM_BASE = 10
SUBSCRIBERS_BASE = 1


@dataclass(slots=True)
class Series:
    """One figure measured at each step of the work."""

    label: str
    unit: str
    higher_is_better: bool = False
    values: dict[int, float] = field(default_factory=dict)

    def ratio(self, step: int) -> float:
        base = self.values[min(self.values)]
        value = self.values[step]
        if base == 0:
            return float("nan")
        return base / value if self.higher_is_better else value / base

    @property
    def verdict(self) -> str:
        """By the largest work against the base: "grows" past FLAT_RATIO, "falls" under its
        inverse (fixed costs spread thinner), else "flat". A step between them that strays is
        the machine's noise more often than a trend; the table shows every step."""
        ratio = self.ratio(max(self.values))
        if ratio > FLAT_RATIO:
            return "grows"
        if ratio < 1 / FLAT_RATIO:
            return "falls"
        return "flat"


@dataclass(slots=True)
class Dimension:
    name: str
    work: Callable[[int], str]  # the work at a step, in words
    series: list[Series] = field(default_factory=list)

    def figure(self, label: str, unit: str, *, higher_is_better: bool = False) -> Series:
        for series in self.series:
            if series.label == label:
                return series
        series = Series(label, unit, higher_is_better)
        self.series.append(series)
        return series


# --- runs in the database ------------------------------------------------------------------------


def runs_at(step: int) -> int:
    return RUNS_BASE * step


def grow_runs(backend: str, steps: Sequence[int], args: argparse.Namespace) -> Dimension:
    dimension = Dimension("runs in the database", lambda step: f"{runs_at(step):,} runs")
    for step in steps:
        total = runs_at(step) if not args.smoke else REALISTIC_RUNS * step
        if total > args.max_runs:
            break
        argv = [
            "--backend",
            backend,
            "--runs",
            str(REALISTIC_RUNS),
            "--events",
            str(REALISTIC_EVENTS),
            "--bulk-runs",
            str(total - REALISTIC_RUNS),
            "--repeat",
            "1",
            "--duration",
            str(args.read_seconds),
            "--warmup",
            "1",
            # One pair of servers for the metrics + Sentry check read_api makes: its cost is
            # read_api's own measure, not a figure of this table.
            "--pairs",
            "1",
        ]
        if args.smoke:
            argv.append("--smoke")
        print(f"== {backend}: {total:,} runs", flush=True)
        report = read_api.bench_backend(backend, read_api.parse_args(argv))
        for endpoint in READ_ENDPOINTS:
            result = report.result(endpoint)
            dimension.figure(f"{endpoint.removesuffix(' c=1')} p99", "ms").values[step] = (
                result.p99_ms
            )
        first = report.result("runs first page")
        figure = dimension.figure("runs first page c=32", "req/s", higher_is_better=True)
        figure.values[step] = first.rps
    return dimension


# --- nodes in a drain ----------------------------------------------------------------------------


def drain_requests(shape: str, nodes: int) -> list[TaskRequest]:
    """`nodes` nodes of `shape`, in as few plans as MAX_NODES allows."""
    plans = -(-nodes // MAX_NODES)
    return [orchestration.dag_request(shape, nodes // plans) for _ in range(plans)]


@contextmanager
def drain_settings(backend: str, server: str | None) -> Iterator[Settings]:
    """The settings of a drain on a fresh database, its artifacts on the disk."""
    with (
        fresh_database(backend, server) as url,
        orchestration.artifacts_dir(in_ram=False) as artifacts,
    ):
        yield orchestration.drain_settings(url, artifacts, raised=False)


def grow_nodes(
    backend: str, server: str | None, steps: Sequence[int], args: argparse.Namespace
) -> Dimension:
    dimension = Dimension("nodes in a drain", lambda step: f"{NODES_BASE * step:,} nodes")
    for step in steps:
        nodes = NODES_BASE * step
        for shape in ("wide", "deep"):
            seconds = []
            for _ in range(args.repeat):
                with drain_settings(backend, server) as settings:
                    requests = drain_requests(shape, nodes)
                    seconds.append(asyncio.run(orchestration.time_drain(settings, requests)))
            ms = statistics.median(seconds) * 1000 / nodes
            print(f"  {backend} {shape} {nodes:,} nodes: {ms:.2f} ms/node", flush=True)
            dimension.figure(f"{shape}, ms a node", "ms").values[step] = ms
    return dimension


def grow_claim(
    backend: str, server: str | None, steps: Sequence[int], args: argparse.Namespace
) -> Dimension:
    dimension = Dimension("ready nodes queued", lambda step: f"{CLAIM_BASE * step:,} ready")
    for step in steps:
        ready = CLAIM_BASE * step
        with drain_settings(backend, server) as settings:
            asyncio.run(orchestration.queue_ready(settings, ready))
            ms = asyncio.run(orchestration.time_claims(settings))
        print(f"  {backend} claim with {ready:,} ready: {ms:.2f} ms", flush=True)
        dimension.figure("one claim", "ms").values[step] = ms
    return dimension


# --- subscribers on one run ----------------------------------------------------------------------


def grow_subscribers(
    backend: str, server: str | None, steps: Sequence[int], args: argparse.Namespace
) -> Dimension:
    dimension = Dimension(
        "subscribers on one run", lambda step: f"{SUBSCRIBERS_BASE * step:,} subscribers"
    )
    for step in steps:
        count = SUBSCRIBERS_BASE * step
        stream_args = streams.parse_args(
            ["--backend", backend, "--repeat", "1", *(["--smoke"] if args.smoke else [])]
        )
        stream_args.subscribers = count
        result = streams.measure(backend, server, stream_args)
        if result.problems:
            raise BenchError(f"{count} subscribers: {result.problems[0]}")
        print(
            f"  {backend} {count:,} subscribers: live p99 {result.live[2]:.1f} ms, "
            f"RSS peak {result.rss_peak:.0f} MB",
            flush=True,
        )
        dimension.figure("live p99", "ms").values[step] = result.live[2]
        dimension.figure("peak RSS", "MB").values[step] = result.rss_peak
        per_message = result.server_cpu * 1e6 / max(result.messages, 1)
        dimension.figure("API CPU a message", "us").values[step] = per_message
    return dimension


# --- report --------------------------------------------------------------------------------------


def print_dimension(backend: str, dimension: Dimension) -> None:
    steps = sorted({step for series in dimension.series for step in series.values})
    if not steps:
        return
    print(f"\n{backend}: {dimension.name}")
    header = "".join(f"{dimension.work(step):>20}" for step in steps)
    print(f"{'figure':<26}{header}  cost largest/base  verdict")
    for series in dimension.series:
        cells = "".join(
            f"{series.values[step]:>14.2f} {series.unit:<5}" if step in series.values else " " * 20
            for step in steps
        )
        largest = max(series.values)
        print(f"{series.label:<26}{cells}  {series.ratio(largest):>16.2f}x  {series.verdict}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--only",
        choices=("runs", "nodes", "subscribers"),
        action="append",
        help="grow only this work (repeatable)",
    )
    parser.add_argument(
        "--max-runs",
        type=int,
        default=DEFAULT_MAX_RUNS,
        help="largest number of runs seeded (10000000 for the 1,000x point)",
    )
    parser.add_argument("--read-seconds", type=int, default=5, help="wrk seconds a read point")
    parser.add_argument("--repeat", type=int, default=3, help="drains a point (median)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        args.read_seconds, args.repeat = 1, 1
    if not RUNS_BASE <= args.max_runs <= RUNS_BASE * STEPS[-1] or args.repeat < 1:
        parser.error(f"--max-runs {RUNS_BASE:,}-{RUNS_BASE * STEPS[-1]:,}, --repeat 1 or more")
    if not 1 <= args.read_seconds <= 60:
        parser.error("--read-seconds 1-60")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    steps = SMOKE_STEPS if args.smoke else STEPS
    only = set(args.only or ("runs", "nodes", "subscribers"))
    results: list[tuple[str, Dimension]] = []
    for backend, server in servers(args.backend):
        if "runs" in only:
            results.append((backend, grow_runs(backend, steps, args)))
        if "nodes" in only:
            results.append((backend, grow_nodes(backend, server, steps, args)))
            results.append((backend, grow_claim(backend, server, steps, args)))
        if "subscribers" in only:
            results.append((backend, grow_subscribers(backend, server, steps, args)))
    for backend, dimension in results:
        print_dimension(backend, dimension)
    print(f"\nmachine at the end: {machine_state()}")
    if args.smoke:
        print("smoke run: the figures mean nothing")
    return 0


if __name__ == "__main__":
    run(main)
