"""Node throughput on PostgreSQL with 1, 2 and 4 standalone worker processes.

The backlog is queued once: an API process (`python -m apps.api`, WORKER_IN_API=0) gets `--runs`
(100) `dag` tasks of `--nodes` (400) nodes through POST /tasks, into a fresh migrated
`bench_<random>` database, which is then analyzed. Each measurement runs on a copy of it
(CREATE DATABASE ... TEMPLATE), dropped after: an API process and N worker processes (`python -m
apps.orchestrator.worker`, what `make worker` runs) started together, on the demo provider at
DEMO_LATENCY_MS=50. Once every worker holds a node, a warm-up (3 s) passes, then a window (10 s)
in which are counted the nodes whose success was recorded (their `finished_at`) and sampled,
from /proc, the CPU of the workers, of the API process (idle: the work was queued before), of
PostgreSQL (the backends of the benchmark's database and the server's background processes) and
of the whole machine, other engineers' processes included. Each setup is measured `--repeat` (3)
times, interleaved; medians.

The workload makes the number of workers the limit the settings set. A run is RUN_CONCURRENCY (4)
parallel chains ("chains"; "wide" is one root, nodes-2 nodes on it, one last node on them all),
so it never has more ready nodes than it may run, and 100 runs admit 400 nodes at once, more
than the 32 slots of 4 workers at WORKER_CONCURRENCY=8, or the 128 at 32: a window at whose end
the runs left could not fill every slot is an error. The settings then allow at most workers x
WORKER_CONCURRENCY / 50 ms nodes a second ("bound"). The series runs at the default
WORKER_CONCURRENCY and again at `--raised` (32), where the machine, not the setting, is the limit.
How many nodes each worker held at once is read back from the nodes' claim and end times.

Targets: throughput grows with workers until the two cores are saturated: each step up in workers
adds 10% or more, unless the machine (whoever's the work) is 90% busy or more at the larger count,
where the step must not lose more than 10%; no node fails or needs a second attempt; no worker
holds more nodes at once than its WORKER_CONCURRENCY; every worker claims nodes.

    .venv/bin/python -m bench.scale                      # ~8 min
    .venv/bin/python -m bench.scale --workers 1 2 --repeat 1 --window 5 --raised 0
    .venv/bin/python -m bench.scale --smoke              # seconds: does it still run?

Only 127.0.0.1 is used; PostgreSQL from TEST_POSTGRES_URL, else the local server. Artifacts and
working directories live under the system's temporary directory, removed after; the processes'
logs in bench/.work/ (gitignored). Exit status: 0 when every target passes, 1 when one fails,
2 when the benchmark itself could not run.
"""

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

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
    plain_dsn,
    postgres_admin,
    postgres_database,
    postgres_server,
    run,
    scratch_dir,
    service_env,
    spawn,
    wait_ready,
    wide_dag,
)

LATENCY_MS = 50
DEFAULT_CONCURRENCY = 8
RUN_CONCURRENCY = 4
SATURATED = 0.9  # share of every core busy from which the machine counts as saturated
GROWTH = 1.1  # the least a step up in workers must add before the cores saturate
LOSS = 0.1  # the most a step up in workers may lose where it saturates them
SUBMITTERS = 8
# A worker's pass starts at most this many queued runs, and a busy worker does not look for more.
MAX_RUNS = 200
SHARE_TIMEOUT = 20.0
POLL_SECONDS = 0.1
CORES = os.cpu_count() or 1
TICKS = os.sysconf("SC_CLK_TCK")

Process = subprocess.Popen[bytes]


# --- CPU from /proc ------------------------------------------------------------------------------


def process_ticks(pid: int) -> int:
    """User and system CPU ticks of `pid` so far; 0 when it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def machine_ticks() -> tuple[int, int]:
    """Busy and total ticks of all CPUs so far (idle and iowait are not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


@dataclass(frozen=True, slots=True)
class Processes:
    """The processes whose CPU is sampled, by what they are."""

    workers: list[int]
    api: int
    postgres: list[int]


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    ticks: dict[int, int]
    machine: tuple[int, int]


def snapshot(pids: Sequence[int]) -> Snapshot:
    return Snapshot(time.monotonic(), {pid: process_ticks(pid) for pid in pids}, machine_ticks())


def cpu_usage(before: Snapshot, after: Snapshot, processes: Processes) -> dict[str, float]:
    """CPU between two snapshots, in % of one core: the workers (together and the busiest), the
    API, PostgreSQL, and the machine (of CORES x 100%) with the share of others' processes."""
    seconds = after.at - before.at

    def percent(pids: Sequence[int]) -> float:
        ticks = sum(after.ticks.get(pid, 0) - before.ticks.get(pid, 0) for pid in pids)
        return ticks / TICKS / seconds * 100

    busy = after.machine[0] - before.machine[0]
    machine = busy / max(1, after.machine[1] - before.machine[1]) * CORES * 100
    usage = {
        "workers": percent(processes.workers),
        "busiest": max(percent([pid]) for pid in processes.workers),
        "api": percent([processes.api]),
        "postgres": percent(processes.postgres),
        "machine": machine,
    }
    usage["others"] = max(0.0, machine - usage["workers"] - usage["api"] - usage["postgres"])
    return usage


async def postgres_pids(connection: asyncpg.Connection, database: str) -> list[int]:
    """The backends serving `database` (but this one) and the server's background processes."""
    rows = await connection.fetch(
        "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        " AND (datname = $1 OR datname IS NULL)",
        database,
    )
    return [row["pid"] for row in rows]


# --- the cluster ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setup:
    workers: int
    worker_concurrency: int

    @property
    def bound(self) -> float:
        """Nodes a second the settings allow: every slot busy with a 50 ms call."""
        return self.workers * self.worker_concurrency * 1000 / LATENCY_MS

    @property
    def label(self) -> str:
        return f"{self.workers} worker(s), WORKER_CONCURRENCY={self.worker_concurrency}"


def cluster_env(url: str, workdir: Path, **settings: str) -> dict[str, str]:
    """The service's defaults on `url` with the demo provider at LATENCY_MS, and `settings`."""
    return service_env(
        url,
        HOST=HOST,
        PORT=str(free_port()),
        ARTIFACTS_DIR=str(workdir / "artifacts"),
        DEMO_LATENCY_MS=str(LATENCY_MS),
        RUN_CONCURRENCY=str(RUN_CONCURRENCY),
        **settings,
    )


@contextmanager
def api_process(url: str, workdir: Path) -> Iterator[tuple[str, int]]:
    """An API process without a worker; its base URL and pid."""
    env = cluster_env(url, workdir, WORKER_IN_API="0")
    base_url, log = f"http://{HOST}:{env['PORT']}", WORK / "scale-api.log"
    with spawn(API_COMMAND, env, workdir, log) as process:
        wait_ready(process, base_url, log)
        yield base_url, process.pid


@contextmanager
def worker_processes(url: str, workdir: Path, setup: Setup) -> Iterator[list[Process]]:
    """`setup.workers` worker processes, started together."""
    env = cluster_env(url, workdir, WORKER_CONCURRENCY=str(setup.worker_concurrency))
    with ExitStack() as stack:
        processes = [
            stack.enter_context(spawn(WORKER_COMMAND, env, workdir, WORK / f"scale-worker-{i}.log"))
            for i in range(1, setup.workers + 1)
        ]
        yield processes


def plan(shape: str, nodes: int) -> list[dict[str, Any]]:
    """Chains: RUN_CONCURRENCY parallel chains. Wide: a root, nodes-2 nodes on it, a last node
    on all of those."""
    if shape == "chains":
        return [
            dag_node(i, [i - RUN_CONCURRENCY] if i >= RUN_CONCURRENCY else []) for i in range(nodes)
        ]
    return wide_dag(nodes)


async def submit_backlog(base_url: str, args: argparse.Namespace) -> None:
    """POST `--runs` DAGs, SUBMITTERS at a time; `BenchError` when one is refused."""
    pending = iter(range(args.runs))
    spec = {"type": "dag", "nodes": plan(args.shape, args.nodes)}

    async def submitter(client: httpx.AsyncClient) -> None:
        for index in pending:
            body = {"title": f"scale {index}", "task_spec": spec}
            response = await client.post("/tasks", json=body)
            if response.status_code != 202:
                raise BenchError(f"POST /tasks: {response.status_code} {response.text[:300]}")

    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=60, trust_env=False
    ) as client:
        await asyncio.gather(*(submitter(client) for _ in range(SUBMITTERS)))


# --- one measurement -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    finished: int  # nodes recorded as succeeded in the window
    seconds: float
    per_second: list[int]
    failed: int  # nodes failed (should be none)
    retried: int  # nodes of the window that needed more than one attempt (should be none)
    cpu: dict[str, float]
    in_flight: int  # the most nodes one worker held at once
    working: int  # workers that claimed nodes in the window

    @property
    def rate(self) -> float:
        return self.finished / self.seconds


async def wait_all_working(
    connection: asyncpg.Connection, setup: Setup, workers: list[Process]
) -> None:
    """Return once every worker holds a node, or after SHARE_TIMEOUT (one worker may keep
    every node to itself: the window shows it); `BenchError` if a worker exits."""
    deadline = time.monotonic() + SHARE_TIMEOUT
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in workers):
            raise BenchError(f"a worker exited; see {WORK}/scale-worker-*.log")
        holders = await connection.fetchval(
            "SELECT count(DISTINCT lease_owner) FROM nodes WHERE status = 'running'"
        )
        if holders >= setup.workers:
            return
        await asyncio.sleep(POLL_SECONDS)


async def observe(
    url: str, setup: Setup, api_pid: int, workers: list[Process], args: argparse.Namespace
) -> Sample:
    """Warm up, then count the nodes that finish in the window and sample the CPU meanwhile."""
    database = make_url(url).database or ""
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        await wait_all_working(connection, setup, workers)
        await asyncio.sleep(args.warmup)
        postgres = await postgres_pids(connection, database)
        processes = Processes([w.pid for w in workers], api_pid, postgres)
        pids = [*processes.workers, api_pid, *postgres]
        before, start = snapshot(pids), datetime.now(UTC)
        await asyncio.sleep(args.window)
        after, end = snapshot(pids), datetime.now(UTC)
        rows = await connection.fetch(NODE_ROWS)
    finally:
        await connection.close()
    return tally(rows, start, end, setup, cpu_usage(before, after, processes))


# Each node with the worker that started its latest attempt (the `node.started` event says).
NODE_ROWS = """
SELECT n.id, n.run_id, n.status, n.attempt, n.started_at, n.finished_at, s.worker
FROM nodes AS n LEFT JOIN (
    SELECT DISTINCT ON (node_id) node_id, data->>'worker' AS worker
    FROM events WHERE type = 'node.started' ORDER BY node_id, id DESC
) AS s ON s.node_id = n.id
"""


def most_in_flight(rows: list[asyncpg.Record], end: datetime) -> int:
    """The most nodes one worker held at once up to `end`, from when each was claimed to when
    its end was recorded (a node still held counts until `end`). A worker frees a slot before
    the pass that records the end and claims again, and that pass writes the end first, so a
    worker that keeps to WORKER_CONCURRENCY never shows more."""
    changes: dict[str, list[tuple[datetime, int]]] = {}
    for row in rows:
        if row["worker"] is None or row["started_at"] is None or row["started_at"] >= end:
            continue
        finished = row["finished_at"] if row["finished_at"] and row["finished_at"] < end else end
        changes.setdefault(row["worker"], []).extend(((row["started_at"], 1), (finished, -1)))
    most = 0
    for steps in changes.values():
        held = 0
        for _, change in sorted(steps):  # at the same instant an end (-1) sorts first
            held += change
            most = max(most, held)
    return most


def tally(
    rows: list[asyncpg.Record], start: datetime, end: datetime, setup: Setup, cpu: dict[str, float]
) -> Sample:
    seconds = (end - start).total_seconds()
    done = [
        row for row in rows if row["status"] == "succeeded" and start <= row["finished_at"] < end
    ]
    left = Counter(
        row["run_id"] for row in rows if not row["finished_at"] or row["finished_at"] >= end
    )
    room = sum(min(RUN_CONCURRENCY, count) for count in left.values())
    if room < setup.workers * setup.worker_concurrency:
        raise BenchError(f"the backlog ran low: {room} nodes could run at the end; raise --nodes")
    per_second = [0] * int(seconds)
    for row in done:
        second = int((row["finished_at"] - start).total_seconds())
        if second < len(per_second):
            per_second[second] += 1
    failed = sum(1 for row in rows if row["status"] == "failed")
    retried = sum(1 for row in done if row["attempt"] > 1)
    working = {
        row["worker"] for row in rows if row["started_at"] and start <= row["started_at"] < end
    }
    in_flight = most_in_flight(rows, end)
    return Sample(
        len(done), seconds, per_second, failed, retried, cpu, in_flight, len(working - {None})
    )


@contextmanager
def queued_backlog(server: str, args: argparse.Namespace) -> Iterator[str]:
    """A migrated database holding the backlog, queued through POST /tasks; its name. Each
    measurement runs on a copy (CREATE DATABASE ... TEMPLATE), so the backlog is queued once."""
    with fresh_database("postgresql", server) as url, scratch_dir("queue") as workdir:
        with api_process(url, workdir) as (base_url, _):
            clock = time.perf_counter()
            asyncio.run(submit_backlog(base_url, args))
        print(f"queued {args.runs} runs through POST /tasks in {time.perf_counter() - clock:.1f} s")
        # This server runs without autovacuum; a production one would have analyzed the new
        # rows by now, and without statistics the planner makes ready nodes by walking every
        # pending node of every running run. The copies keep these statistics.
        asyncio.run(postgres_admin(url, "ANALYZE"))
        yield make_url(url).database or ""


def measure(server: str, template: str, setup: Setup, args: argparse.Namespace) -> Sample:
    """One cluster, an API process and the workers, on a copy of the backlog; observed."""
    with (
        postgres_database(server, template=template) as url,
        scratch_dir("scale") as workdir,
        api_process(url, workdir) as (_, api_pid),
        worker_processes(url, workdir, setup) as workers,
    ):
        return asyncio.run(observe(url, setup, api_pid, workers, args))


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    setup: Setup
    samples: list[Sample]

    @property
    def rate(self) -> float:
        return statistics.median(sample.rate for sample in self.samples)

    def cpu(self, what: str) -> float:
        return statistics.median(sample.cpu[what] for sample in self.samples)

    @property
    def saturated(self) -> bool:
        return self.cpu("machine") >= SATURATED * CORES * 100

    @property
    def faults(self) -> int:
        return sum(sample.failed + sample.retried for sample in self.samples)

    @property
    def in_flight(self) -> int:
        return max(sample.in_flight for sample in self.samples)

    @property
    def working(self) -> int:
        return min(sample.working for sample in self.samples)


@dataclass(frozen=True, slots=True)
class Step:
    """One step up in workers at the same WORKER_CONCURRENCY, and whether it met the target."""

    smaller: Result
    larger: Result

    @property
    def speedup(self) -> float:
        return self.larger.rate / self.smaller.rate

    @property
    def passed(self) -> bool:
        return self.speedup >= GROWTH or (self.larger.saturated and self.speedup >= 1 - LOSS)


def steps(results: list[Result]) -> list[Step]:
    series: dict[int, list[Result]] = {}
    for result in results:
        series.setdefault(result.setup.worker_concurrency, []).append(result)
    return [
        Step(smaller, larger)
        for chain in series.values()
        for smaller, larger in itertools.pairwise(chain)
    ]


def print_sample(setup: Setup, repeat: int, sample: Sample) -> None:
    cpu = sample.cpu
    print(
        f"  [{repeat}] {setup.label:<42} {sample.rate:7.1f} nodes/s"
        f"  (1 s bins {min(sample.per_second)}-{max(sample.per_second)})"
        f"  cpu% workers {cpu['workers']:.0f} api {cpu['api']:.0f} pg {cpu['postgres']:.0f}"
        f" machine {cpu['machine']:.0f}  held at once {sample.in_flight}"
        f"  working {sample.working}",
        flush=True,
    )


def print_results(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\nPostgreSQL: {args.runs} runs of {args.nodes} nodes ({args.shape}) queued, demo at "
        f"DEMO_LATENCY_MS={LATENCY_MS}, RUN_CONCURRENCY={RUN_CONCURRENCY}; nodes finished in a "
        f"{args.window:g} s window after {args.warmup:g} s of warm-up, median of {args.repeat}"
    )
    print(f"CPU in % of one core ({CORES} cores = {CORES * 100}%), medians")
    header = ("workers", "WORKER_CONC", "held", "nodes/s", "bound", "speed-up", "workers%")
    header += ("busiest%",)
    print("".join(f"{h:>12}" for h in header) + "".join(f"{h:>10}" for h in CPU_COLUMNS))
    base: dict[int, float] = {}
    for r in results:
        base.setdefault(r.setup.worker_concurrency, r.rate)
        speedup = r.rate / base[r.setup.worker_concurrency]
        cells = (r.setup.workers, r.setup.worker_concurrency, r.in_flight, f"{r.rate:.1f}")
        cells += (f"{r.setup.bound:.0f}", f"{speedup:.2f}x")
        cells += (f"{r.cpu('workers'):.0f}", f"{r.cpu('busiest'):.0f}")
        line = "".join(f"{c:>12}" for c in cells)
        print(line + "".join(f"{r.cpu(what):>10.0f}" for what in CPU_COLUMNS))


CPU_COLUMNS = ("api", "postgres", "machine", "others")


def print_targets(results: list[Result]) -> bool:
    passed = True
    print(
        f"\ntargets: each step up in workers adds >= {GROWTH - 1:.0%}, or loses <= "
        f"{LOSS:.0%} where the machine is >= {SATURATED:.0%} busy (saturated)"
    )
    for step in steps(results):
        small, large = step.smaller, step.larger
        where = f"machine {small.cpu('machine'):.0f}% -> {large.cpu('machine'):.0f}%"
        where += ": saturated" if large.saturated else ""
        verdict = "PASS" if step.passed else "FAIL"
        print(
            f"  WORKER_CONCURRENCY={small.setup.worker_concurrency}: {small.setup.workers} -> "
            f"{large.setup.workers} workers x{step.speedup:.2f} ({where})  {verdict}"
        )
        passed &= step.passed
    faults = sum(result.faults for result in results)
    print(f"  nodes failed or retried: {faults}  {'PASS' if not faults else 'FAIL'}")
    over = [r for r in results if r.in_flight > r.setup.worker_concurrency]
    for r in over:
        print(f"  {r.setup.label}: a worker held {r.in_flight} nodes at once  FAIL")
    if not over:
        print("  no worker held more nodes at once than its WORKER_CONCURRENCY  PASS")
    idle = [r for r in results if r.working < r.setup.workers]
    for r in idle:
        print(f"  {r.setup.label}: only {r.working} claimed nodes in a window  FAIL")
    if not idle:
        print("  every worker claimed nodes in every window  PASS")
    return passed and not faults and not over and not idle


# --- main ----------------------------------------------------------------------------------------


def setups(args: argparse.Namespace) -> list[Setup]:
    levels = [DEFAULT_CONCURRENCY, *([args.raised] if args.raised else [])]
    return [Setup(workers, level) for level in levels for workers in args.workers]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--raised", type=int, default=32, help="WORKER_CONCURRENCY, 0: skip")
    parser.add_argument("--shape", choices=("chains", "wide"), default="chains")
    parser.add_argument("--runs", type=int, default=100, help="runs queued before the workers")
    parser.add_argument("--nodes", type=int, default=400, help=f"nodes a run (3-{MAX_NODES})")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds")
    parser.add_argument("--window", type=float, default=10.0, help="seconds")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        args.workers, args.raised, args.repeat = [1, 2], 0, 1
        args.runs, args.nodes, args.warmup, args.window = 8, 200, 0.5, 1.0
    if not 3 <= args.nodes <= MAX_NODES or not 1 <= args.runs <= MAX_RUNS or args.window < 1:
        parser.error(f"--nodes 3-{MAX_NODES}, --runs 1-{MAX_RUNS}, --window >= 1")
    args.workers = sorted(set(args.workers))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    server = postgres_server(required=True)
    assert server is not None
    print(f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    chosen = setups(args)
    samples: dict[Setup, list[Sample]] = {setup: [] for setup in chosen}
    with queued_backlog(server, args) as template:
        for repeat in range(1, args.repeat + 1):
            for setup in chosen:
                samples[setup].append(measure(server, template, setup, args))
                print_sample(setup, repeat, samples[setup][-1])
    print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")
    results = [Result(setup, samples[setup]) for setup in chosen]
    print_results(results, args)
    passed = print_targets(results)
    if args.smoke:
        # Throughput over a second means nothing; failed nodes and overfull workers still do.
        print("\nsmoke run: the throughput targets are not judged")
        faults = any(r.faults or r.in_flight > r.setup.worker_concurrency for r in results)
        return 1 if faults else 0
    return 0 if passed else 1


if __name__ == "__main__":
    run(main)
