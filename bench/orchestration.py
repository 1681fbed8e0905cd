"""Orchestration overhead per node, and throughput of demo tasks through the HTTP API.

Three measurements per backend (SQLite, and PostgreSQL when its server answers):

1. Overhead per node. A DAG of `--nodes` nodes (200) runs on the `demo` provider at
   DEMO_LATENCY_MS=0, so what is timed is the orchestration alone: the scheduling queries, the
   claims, the artifact files and the status changes. Two shapes: "wide" (one root, nodes-2
   parallel nodes depending on it, one last node depending on all of them) and "deep" (a chain).
   Each run gets a fresh migrated database; the task is submitted in-process with `submit_task`,
   then `Worker(transactions, settings).drain()` is timed until the run has succeeded. The wide DAG
   runs once with the default WORKER_CONCURRENCY / RUN_CONCURRENCY and once with RUN_CONCURRENCY
   raised to WORKER_CONCURRENCY. Median of 3. Artifacts go to the disk (the system's temporary
   directory, or `--artifacts-dir`), as users keep them, every drain's removed at the end;
   `--artifacts-in-ram` puts them on /dev/shm. Targets: SQLite
   <= 1.0 ms/node wide, <= 1.5 deep; PostgreSQL <= 1.5 wide, <= 2.5 deep.
2. Throughput through HTTP. A real API process (`python -m apps.api`, WORKER_IN_API=1,
   DEMO_LATENCY_MS=0, LOG_LEVEL=warning) on a fresh migrated database gets `--runs` (50)
   `{"type": "demo"}` tasks as concurrent POSTs; GET /runs?status=succeeded|failed is polled until
   every run has finished. Reported: the submit time, the drain time (first POST to the last
   run's finished_at) and how many succeeded or failed. Target: all of them succeed.
3. The claim with a backlog. One claim of WORKER_CONCURRENCY nodes, timed as a worker's pass
   runs it and rolled back, on a database with 100 ready nodes and on one with 10,000 (in
   running chains), the two taking turns on one CPU so that the machine's drift weighs on
   both alike; median of 30 each. Target: 10,000 ready cost at most 1.2x what 100 cost.

Run from the repository root (PostgreSQL from TEST_POSTGRES_URL, else the local server):

    .venv/bin/python -m bench.orchestration                       # both backends, ~1-2 min
    .venv/bin/python -m bench.orchestration --backend sqlite --nodes 200 --runs 50
    .venv/bin/python -m bench.orchestration --backend sqlite --profile   # + cProfile of deep
    .venv/bin/python -m bench.orchestration --smoke               # seconds: does it still run?

Only 127.0.0.1 is used. SQLite files and artifacts live in new directories under the system's
temporary directory, removed at the end; the API's log is kept in bench/.work/ (gitignored);
each PostgreSQL database is a new `bench_<random>`, dropped at the end. Exit status: 0 when every
target passes, 1 when one fails, 2 when the benchmark itself could not run.
"""

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from apps.core.database import SessionFactory, open_database, unit_of_work
from apps.core.settings import Settings, load_settings
from apps.orchestrator.engine.statements import claim
from apps.orchestrator.engine.submission import submit_task
from apps.orchestrator.model.models import Node, Run
from apps.orchestrator.model.states import NodeStatus, RunStatus
from apps.orchestrator.plans.task_specs import MAX_NODES, TaskRequest
from apps.orchestrator.worker.loop import Worker
from bench.harness import (
    API_COMMAND,
    API_KEY,
    HOST,
    SMOKE_HELP,
    WORK,
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

# ms a node, by backend and shape, with the artifacts on the disk.
TARGET_MS = {
    ("sqlite", "wide"): 1.0,
    ("sqlite", "deep"): 1.5,
    ("postgresql", "wide"): 1.5,
    ("postgresql", "deep"): 2.5,
}
DRAIN_TIMEOUT = 300.0
HTTP_TIMEOUT = 180.0
POLL_SECONDS = 0.05
PAGE_LIMIT = 200
PROFILE_LINES = 15
SHM = Path("/dev/shm")


@contextmanager
def artifacts_dir(in_ram: bool, parent: Path | None = None) -> Iterator[Path]:
    """A new directory for artifact files, removed after: on the disk, where users keep them
    (under `parent`, else the system's temporary directory), unless `in_ram` (a RAM file system,
    to see the orchestrator without the disk).

    A node creates two inodes (the artifact and its sidecar, in its run's directory of the attempt).
    This machine's ext4 runs without a journal, and without one ext4 will not reuse an inode
    freed in the last 60 s (360 s while its table block is unwritten): it steps over each such
    inode of the group, one by one, before it hands out a free one. In a directory whose group
    others churn (the temporary directory, under test suites) a creation cost 0.3-0.8 ms of CPU,
    in a quiet one 0.01-0.02 ms. `--artifacts-dir` measures the disk away from that churn."""
    if in_ram and SHM.is_dir():
        parent = SHM
    elif parent is None:
        with scratch_dir("artifacts") as path:
            yield path
        return
    with tempfile.TemporaryDirectory(prefix="crew-bench-artifacts-", dir=parent) as path:
        yield Path(path)


def new_drain_dir(root: Path) -> Path:
    """A directory of its own for one drain's artifacts, under the benchmark's `root`. Drains'
    files are all removed at the end, not after each drain: on this disk a drain's creations
    would otherwise pay for the previous drains' deletions (see `artifacts_dir`)."""
    return Path(tempfile.mkdtemp(prefix="drain-", dir=root))


# --- overhead per node: in-process drain ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    shape: str
    raised: bool  # RUN_CONCURRENCY raised to WORKER_CONCURRENCY


CASES = (Case("wide", raised=False), Case("wide", raised=True), Case("deep", raised=False))


def dag_request(shape: str, count: int) -> TaskRequest:
    """Wide: a root, count-2 nodes on it, a last node on all of those. Deep: a chain."""
    if shape == "deep":
        nodes = [dag_node(i, [i - 1] if i else []) for i in range(count)]
    else:
        nodes = wide_dag(count)
    spec = {"type": "dag", "nodes": nodes}
    return TaskRequest.model_validate({"title": f"bench {shape} {count}", "task_spec": spec})


def drain_settings(url: str, artifacts: Path, *, raised: bool) -> Settings:
    """The service's defaults (and environment), on `url`, the demo provider at zero latency."""
    overrides: dict[str, Any] = {
        "database_url": url,
        "artifacts_dir": artifacts,
        "demo_latency_ms": 0,
        "worker_in_api": False,
        "llm_default_provider": "demo",
        "llm_role_models": {},
    }
    settings = load_settings(_env_file=None, **overrides)
    if raised:
        settings = load_settings(
            _env_file=None, **overrides, run_concurrency=settings.worker_concurrency
        )
    return settings


async def check_succeeded(sessions: SessionFactory, run_id: uuid.UUID) -> None:
    async with sessions() as session:
        row = (await session.execute(select(Run.status, Run.error).where(Run.id == run_id))).one()
    if row.status != RunStatus.SUCCEEDED:
        raise BenchError(f"run {run_id} ended {row.status}, not succeeded: {row.error}")


async def time_drain(
    settings: Settings, requests: Sequence[TaskRequest], profiler: cProfile.Profile | None = None
) -> float:
    """Submit every request, then time one `Worker.drain()` until every run has succeeded
    (seconds)."""
    async with open_database(settings) as database:
        run_ids = []
        for request in requests:
            async with unit_of_work(database.sessions) as session:
                run_ids.append(
                    await submit_task(session, request, created_by="bench", settings=settings)
                )
        worker = Worker(database.transactions, settings)
        started = time.perf_counter()
        with profiling(profiler):
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await worker.drain()
        elapsed = time.perf_counter() - started
        for run_id in run_ids:
            await check_succeeded(database.sessions, run_id)
    return elapsed


@contextmanager
def profiling(profiler: cProfile.Profile | None) -> Iterator[None]:
    if profiler is None:
        yield
        return
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


@dataclass(frozen=True, slots=True)
class DrainResult:
    backend: str
    case: Case
    nodes: int
    worker_concurrency: int
    run_concurrency: int
    seconds: list[float]

    @property
    def ms_per_node(self) -> float:
        return statistics.median(self.seconds) * 1000 / self.nodes

    @property
    def target_ms(self) -> float:
        return TARGET_MS[self.backend, self.case.shape]

    @property
    def passed(self) -> bool:
        return self.ms_per_node <= self.target_ms

    @property
    def setting(self) -> str:
        which = "RUN_CONCURRENCY raised" if self.case.raised else "defaults"
        return f"WORKER={self.worker_concurrency} RUN={self.run_concurrency} ({which})"


def measure_case(
    backend: str, server: str | None, case: Case, args: argparse.Namespace, artifacts_root: Path
) -> DrainResult:
    """The case `--repeat` times, each on a fresh database and artifacts directory."""
    seconds, settings, nodes = [], None, args.nodes
    for repeat in range(1, args.repeat + 1):
        with fresh_database(backend, server) as url:
            settings = drain_settings(url, new_drain_dir(artifacts_root), raised=case.raised)
            seconds.append(asyncio.run(time_drain(settings, [dag_request(case.shape, nodes)])))
        print(
            f"  [{repeat}/{args.repeat}] {case.shape:<5}"
            f" run_concurrency={settings.run_concurrency:<3} {seconds[-1]:7.3f} s"
            f"  {seconds[-1] * 1000 / nodes:6.2f} ms/node",
            flush=True,
        )
    assert settings is not None
    wc, rc = settings.worker_concurrency, settings.run_concurrency
    return DrainResult(backend, case, nodes, wc, rc, seconds)


def print_drain(results: list[DrainResult], args: argparse.Namespace) -> None:
    first = results[0]
    where = "a RAM file system" if args.artifacts_in_ram else "the disk"
    if args.artifacts_dir and not args.artifacts_in_ram:
        where += f" under {args.artifacts_dir}"
    print(
        f"\n{first.backend}: orchestration overhead, {first.nodes}-node DAG, demo provider, "
        f"DEMO_LATENCY_MS=0, Worker.drain(), median of {len(first.seconds)}, artifacts on "
        f"{where}; machine: {machine_state()}"
    )
    print(f"{'shape':<7}{'settings':<42}{'runs (s)':<26}{'ms/node':>8}  target")
    for r in results:
        runs = " ".join(f"{s:.3f}" for s in r.seconds)
        verdict = "PASS" if r.passed else ("not judged" if args.smoke else "FAIL")
        print(
            f"{r.case.shape:<7}{r.setting:<42}{runs:<26}{r.ms_per_node:>8.2f}"
            f"  <= {r.target_ms:g} ms  {verdict}"
        )


# --- the claim with a backlog -------------------------------------------------------------------


CLAIM_BACKLOGS = (100, 10_000)
SMOKE_CLAIM_BACKLOGS = (8, 40)
CLAIM_TIMES = 30
CLAIM_RUNS = 8  # as many as the default WORKER_CONCURRENCY: every slot has a run to fill it
TARGET_CLAIM_RATIO = 1.2


@dataclass(frozen=True, slots=True)
class ClaimResult:
    backend: str
    ms: dict[int, float]  # ready nodes -> median ms of one claim

    @property
    def ratio(self) -> float:
        return self.ms[max(self.ms)] / self.ms[min(self.ms)]

    @property
    def passed(self) -> bool:
        return self.ratio <= TARGET_CLAIM_RATIO


async def queue_ready(settings: Settings, ready: int) -> None:
    """`ready` ready nodes, in at least CLAIM_RUNS running runs of chains of at most
    MAX_NODES: a claim has the same slots to fill from the same kind of runs either way."""
    runs = max(CLAIM_RUNS, -(-ready // MAX_NODES))
    async with open_database(settings) as database:
        for index in range(runs):
            nodes = ready // runs + (index < ready % runs)
            async with unit_of_work(database.sessions) as session:
                await submit_task(
                    session, dag_request("deep", nodes), created_by="bench", settings=settings
                )
        async with unit_of_work(database.sessions) as session:
            await session.execute(update(Run).values(status=RunStatus.RUNNING))
            await session.execute(update(Node).values(status=NodeStatus.READY))
        # As autovacuum would have by then (this machine's PostgreSQL runs without it).
        async with database.engine.connect() as connection:
            await connection.execute(text("ANALYZE"))


class RolledBack(Exception):
    """Raised at the end of a timed claim, so that its transaction rolls back."""


async def time_claims(settings: Settings) -> float:
    """Median ms of one claim on the database of `settings` (see `time_claims_alternately`)."""
    (ms,) = await time_claims_alternately([settings])
    return ms


@contextmanager
def on_one_cpu() -> Iterator[None]:
    """The calling thread, and the threads it starts meanwhile, kept on one CPU of those it
    may use (where the system lets a thread be pinned).

    A claim on SQLite runs on its database's writer thread, whichever CPU that thread was
    placed on. Here a CPU ran a claim in 0.42 ms at one time and in 0.7-0.8 ms for minutes at
    another, each CPU at its own times; with the two databases' writers on different CPUs,
    the backlogs' ratio moved from 0.56x to 2.14x in one morning, telling where each writer
    ran rather than what a backlog costs."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


async def time_claims_alternately(every_settings: Sequence[Settings]) -> list[float]:
    """Median ms of one claim of WORKER_CONCURRENCY nodes on each database, each claim rolled
    back, the databases taking turns on one CPU (`on_one_cpu`): a machine that slows down or
    speeds up while they are measured weighs on each alike. Each claim runs as a worker's pass
    runs it: in a transaction of `Transactions` (on SQLite its writer's thread and
    connection), timed around the claim's statement alone."""
    times: list[list[float]] = [[] for _ in every_settings]

    def timed_claim(settings: Settings, into: list[float]) -> Callable[[Session], None]:
        def run(session: Session) -> None:
            connection = session.connection()  # begun before the clock starts
            started = time.perf_counter()
            claim(
                connection,
                worker="bench",
                slots=settings.worker_concurrency,
                per_run=settings.run_concurrency,
                lease_seconds=60,
            )
            into.append(time.perf_counter() - started)
            raise RolledBack

        return run

    with on_one_cpu():
        async with contextlib.AsyncExitStack() as stack:
            databases = [
                await stack.enter_async_context(open_database(settings))
                for settings in every_settings
            ]
            claims = [
                (database, timed_claim(settings, into))
                for database, settings, into in zip(databases, every_settings, times, strict=True)
            ]
            for _ in range(CLAIM_TIMES):
                for database, timed in claims:
                    with contextlib.suppress(RolledBack):
                        await database.transactions.run(timed)
    return [statistics.median(each) * 1000 for each in times]


def measure_claims(backend: str, server: str | None, args: argparse.Namespace) -> ClaimResult:
    """One claim's time with few and with many ready nodes queued, each on a fresh database,
    the two measured in turns."""
    backlogs = SMOKE_CLAIM_BACKLOGS if args.smoke else CLAIM_BACKLOGS
    with contextlib.ExitStack() as stack:
        every_settings = []
        for ready in backlogs:
            url = stack.enter_context(fresh_database(backend, server))
            artifacts = stack.enter_context(artifacts_dir(in_ram=False))
            settings = drain_settings(url, artifacts, raised=False)
            asyncio.run(queue_ready(settings, ready))
            every_settings.append(settings)
        ms = dict(zip(backlogs, asyncio.run(time_claims_alternately(every_settings)), strict=True))
    for ready, each in ms.items():
        print(f"  claim with {ready:,} ready nodes: {each:.2f} ms", flush=True)
    return ClaimResult(backend, ms)


def print_claims(result: ClaimResult, args: argparse.Namespace) -> None:
    times = ", ".join(f"{ready:,} ready: {ms:.2f} ms" for ready, ms in result.ms.items())
    verdict = "PASS" if result.passed else ("not judged" if args.smoke else "FAIL")
    print(
        f"\n{result.backend}: one claim (median of {CLAIM_TIMES}, rolled back, the databases in "
        f"turns on one CPU): {times}; {result.ratio:.2f}x (target <= {TARGET_CLAIM_RATIO}x)  "
        f"{verdict}"
    )


# --- throughput through HTTP ---------------------------------------------------------------------


@contextmanager
def api_process(backend: str, url: str, workdir: Path) -> Iterator[str]:
    """`python -m apps.api` with its worker, on a free loopback port, run from `workdir`."""
    port = free_port()
    env = service_env(
        url,
        HOST=HOST,
        PORT=str(port),
        ARTIFACTS_DIR=str(workdir / "artifacts"),
        DEMO_LATENCY_MS="0",
        WORKER_IN_API="1",
    )
    log = WORK / f"orchestration-server-{backend}.log"
    with spawn(API_COMMAND, env, workdir, log) as process:
        wait_ready(process, f"http://{HOST}:{port}", log)
        yield f"http://{HOST}:{port}"


async def submit_one(client: httpx.AsyncClient, index: int) -> str:
    """POST one demo task; its run id, or why it was not accepted (prefixed with `error:`)."""
    body = {"title": f"bench demo {index}", "task_spec": {"type": "demo"}}
    try:
        response = await client.post("/tasks", json=body)
    except httpx.HTTPError as error:
        return f"error: {type(error).__name__}: {error}"
    if response.status_code != 202:
        return f"error: {response.status_code} {response.text[:200]}"
    return response.json()["id"]


async def runs_in(client: httpx.AsyncClient, status: str) -> list[dict[str, Any]]:
    """Every run in `status`, following the cursor."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"status": status, "limit": PAGE_LIMIT}
    while True:
        response = await client.get("/runs", params=params)
        response.raise_for_status()
        page = response.json()
        items += page["items"]
        if not page["next_cursor"]:
            return items
        params["cursor"] = page["next_cursor"]


async def wait_finished(
    client: httpx.AsyncClient, count: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Poll until `count` runs have succeeded or failed, or HTTP_TIMEOUT has passed."""
    deadline = time.monotonic() + HTTP_TIMEOUT
    while True:
        succeeded, failed = await runs_in(client, "succeeded"), await runs_in(client, "failed")
        if len(succeeded) + len(failed) >= count or time.monotonic() > deadline:
            return succeeded, failed
        await asyncio.sleep(POLL_SECONDS)


@dataclass(frozen=True, slots=True)
class HttpResult:
    backend: str
    runs: int
    submit_s: float
    drain_s: float
    rejected: list[str]
    succeeded: int
    failed: int
    first_error: str | None

    @property
    def passed(self) -> bool:
        return self.succeeded == self.runs


def last_finished(runs: list[dict[str, Any]]) -> datetime | None:
    stamps = [datetime.fromisoformat(run["finished_at"]) for run in runs if run["finished_at"]]
    return max(stamps, default=None)


async def load_api(backend: str, base_url: str, count: int) -> HttpResult:
    headers = {"X-API-Key": API_KEY}
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60, limits=limits, trust_env=False
    ) as client:
        first_post, clock = datetime.now(UTC), time.perf_counter()
        answers = await asyncio.gather(*(submit_one(client, i) for i in range(count)))
        submit_s = time.perf_counter() - clock
        accepted = [a for a in answers if not a.startswith("error:")]
        succeeded, failed = await wait_finished(client, len(accepted))
    last = last_finished(succeeded + failed)
    drain_s = (last - first_post).total_seconds() if last else float("nan")
    rejected = [a for a in answers if a.startswith("error:")]
    error = next((run["error"] for run in failed), None)
    return HttpResult(
        backend, count, submit_s, drain_s, rejected, len(succeeded), len(failed), error
    )


def measure_http(backend: str, server: str | None, count: int) -> HttpResult:
    """Serve a fresh migrated database with the worker in the API, then load it."""
    with (
        fresh_database(backend, server) as url,
        scratch_dir("api") as workdir,
        api_process(backend, url, workdir) as base_url,
    ):
        result = asyncio.run(load_api(backend, base_url, count))
    print(f"  {count} POSTs in {result.submit_s:.3f} s, drained in {result.drain_s:.3f} s")
    return result


def print_http(result: HttpResult) -> None:
    print(
        f"\n{result.backend}: {result.runs} demo tasks through HTTP, {result.runs} concurrent "
        "POST /tasks, API process with WORKER_IN_API=1, DEMO_LATENCY_MS=0, default concurrency"
    )
    print(f"  submit (first POST to last 202)          {result.submit_s:8.3f} s")
    print(f"  drain (first POST to last run finished)  {result.drain_s:8.3f} s")
    print(f"  rejected POSTs                           {len(result.rejected):8d}")
    print(f"  succeeded / failed                       {result.succeeded:4d} / {result.failed}")
    verdict = "PASS" if result.passed else "FAIL"
    print(f"  all {result.runs} runs succeeded (target)  {verdict}")
    for reason in filter(None, [*result.rejected[:1], result.first_error]):
        print(f"  first problem: {reason}")


# --- profile -------------------------------------------------------------------------------------


def profile_deep(backend: str, server: str | None, nodes: int) -> None:
    """cProfile of one drain of the deep chain: the top functions by cumulative and own time."""
    profiler = cProfile.Profile()
    with fresh_database(backend, server) as url, artifacts_dir(in_ram=False) as artifacts:
        settings = drain_settings(url, artifacts, raised=False)
        elapsed = asyncio.run(time_drain(settings, [dag_request("deep", nodes)], profiler))
    print(f"\n{backend}: cProfile of drain(), deep chain of {nodes}: {elapsed:.3f} s profiled")
    stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
    for order in ("cumulative", "tottime"):
        print(f"--- top {PROFILE_LINES} by {order}")
        stats.sort_stats(order).print_stats(PROFILE_LINES)


# --- main ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    backend: str
    drains: list[DrainResult]
    http: HttpResult
    claims: ClaimResult

    @property
    def passed(self) -> bool:
        drains = all(r.passed for r in self.drains)
        return drains and self.http.passed and self.claims.passed


def bench_backend(backend: str, server: str | None, args: argparse.Namespace) -> Report:
    print(f"== {backend}: {args.nodes}-node DAGs, {args.repeat} times each", flush=True)
    with artifacts_dir(args.artifacts_in_ram, args.artifacts_dir) as artifacts_root:
        drains = [measure_case(backend, server, case, args, artifacts_root) for case in CASES]
    print(f"== {backend}: {args.runs} demo tasks through the API", flush=True)
    http = measure_http(backend, server, args.runs)
    print(f"== {backend}: the claim with a backlog", flush=True)
    return Report(backend, drains, http, measure_claims(backend, server, args))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--nodes", type=int, default=200, help="nodes of each DAG (3-500)")
    parser.add_argument("--runs", type=int, default=50, help="demo tasks POSTed at once (1-500)")
    parser.add_argument("--repeat", type=int, default=3, help="drains of each case (median)")
    parser.add_argument("--profile", action="store_true", help="also cProfile the deep drain")
    parser.add_argument(
        "--artifacts-in-ram",
        action="store_true",
        help="write the drains' artifacts to /dev/shm, not to the disk's temp directory",
    )
    parser.add_argument(
        "--artifacts-dir",
        type=Path,
        help="on the disk, under this directory rather than the system's temporary directory",
    )
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        args.nodes, args.runs, args.repeat = 3, 2, 1
    if not 3 <= args.nodes <= MAX_NODES or not 1 <= args.runs <= 500 or args.repeat < 1:
        parser.error(f"--nodes 3-{MAX_NODES}, --runs 1-500, --repeat 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    backends = servers(args.backend)
    reports = [bench_backend(backend, server, args) for backend, server in backends]
    for report in reports:
        print_drain(report.drains, args)
        print_http(report.http)
        print_claims(report.claims, args)
    if args.profile:
        for backend, server in backends:
            profile_deep(backend, server, args.nodes)
    if args.smoke:
        # Timings of a few nodes mean nothing; that every run succeeded still does.
        print("\nsmoke run: the timing targets are not judged")
        return 0 if all(report.http.passed for report in reports) else 1
    return 0 if all(report.passed for report in reports) else 1


if __name__ == "__main__":
    run(main)
