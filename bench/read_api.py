"""Load test of the read API: list pages of runs and events, first and deep, against a ceiling.

For each backend it builds a fresh database with `alembic upgrade head`, seeds it (100,000 runs
with 2-6 nodes each, 1,000,000 events of which every tenth belongs to one "big" run), serves the
app with one uvicorn worker pinned to CPU 0, and loads each endpoint with `wrk` pinned to CPU 1
(on PostgreSQL the server processes serving the bench's database are moved to CPU 1 as well:
deployed, the database has a host of its own, and does not take the API's core):

    ceiling       GET /bench/ceiling             50 pre-built runs, no database (ceiling_app.py)
    runs first    GET /runs?limit=50
    runs deep     GET /runs?limit=50&cursor=...  the page after row 90,000
    events first  GET /events?run_id=<big run>&limit=50
    events deep   the same after the big run's 90,000th event

Each measured run follows a short warm-up; the set is repeated `--repeat` times and medians are
reported, with the server's peak RSS sampled every 0.2 s, then checked against the targets:
runs first page >= 65% of the ceiling's req/s, deep p50 / first p50 <= 1.2 for runs and events,
peak RSS < 120 MB.

Then the cost of observability, by `--pairs` (5) pairs of fresh servers side by side: one as
above, one with METRICS_ENABLED=1 and SENTRY_DSN pointing at a Sentry endpoint on loopback, loaded
on the runs first page off, on, on, off (or the reverse); target: the median pair loses at most 10%
of its req/s with them on.

Run from the repository root (PostgreSQL from TEST_POSTGRES_URL, else the local server):

    .venv/bin/python -m bench.read_api                    # both backends, the defaults
    .venv/bin/python -m bench.read_api --backend sqlite --duration 5 --repeat 1 --json
    .venv/bin/python -m bench.read_api --smoke            # seconds: does it still run?
    .venv/bin/python -m bench.read_api --list-only --events 10000   # the list's share alone

The SQLite file, the server logs and the artifacts directory live in bench/.work/ (gitignored);
the PostgreSQL database is a new `bench_<random>`. Both are removed at the end unless --keep,
which leaves them for --reuse to load again without seeding (ten million runs take 10-25 minutes
to seed). Exit status: 0 when every target passes, 1 when one fails, 2 when the benchmark itself
could not run.
"""

import argparse
import asyncio
import gc
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import asyncpg
from sqlalchemy.engine import make_url

from apps.core.database import is_sqlite, register_sqlite_functions
from apps.orchestrator.model.models import Base
from apps.orchestrator.model.states import NodeStatus, RunStatus
from apps.orchestrator.reading.events import EVENT_ORDER
from apps.orchestrator.reading.runs import RUN_ORDER
from bench import bulk_runs
from bench.ceiling_app import CEILING_PATH, FakeRun, fake_run
from bench.harness import (
    API_KEY,
    HOST,
    SMOKE_HELP,
    WORK,
    BenchError,
    free_port,
    machine_state,
    migrate,
    plain_dsn,
    postgres_admin,
    postgres_database,
    postgres_server,
    run,
    sentry_sink,
    service_env,
    spawn,
    wait_ready,
)

PAGE = 50
DEEP_FRACTION = 0.9  # the deep pages start after 90% of the rows (row 90,000 of 100,000)
BIG_RUN_SHARE = 10  # every 10th event belongs to the big run
RUN_BATCH = 5_000
EVENT_BATCH = 100_000
SPAN = timedelta(days=365)
RSS_INTERVAL = 0.2

# The runs' list texts are the database's to write (migration 0007's triggers).
RUN_COLUMNS = tuple(
    c.name for c in Base.metadata.tables["runs"].columns if not c.name.startswith("summary_")
)
NODE_COLUMNS = tuple(c.name for c in Base.metadata.tables["nodes"].columns)
EVENT_COLUMNS = ("id", "run_id", "node_id", "type", "ts", "data")
# A run's own events, in order; node.* and llm.call events name one of its nodes.
RUN_STORY = ("run.created", "node.started", "llm.call", "node.succeeded", "artifact.written")
BIG_STORY = ("node.started", "llm.call", "llm.call", "artifact.written", "node.succeeded")

TARGET_CEILING_SHARE = 65.0
TARGET_ONE_AT_A_TIME_P99_MS = 50.0
# Lists a user opens one at a time (p99 at c=1, with the deep page): a common title word (one run
# in six has it), and a rare one (the oldest run alone), which the window cannot find.
ONE_AT_A_TIME = {
    "runs first page": f"/runs?limit={PAGE}",
    "runs failed": f"/runs?limit={PAGE}&status=failed",
    "runs q common": f"/runs?limit={PAGE}&q=globex",
    "runs q rare": f"/runs?limit={PAGE}&q=competitor%20pricing",
}
TARGET_DEEP_RATIO = 1.2
TARGET_RSS_MB = 120.0
TARGET_OBSERVABILITY_COST = 10.0
OBSERVED_ENDPOINT = "runs first page"
LIST_ONLY = ("ceiling", "runs first page")
# Each pair of servers is loaded in one of these orders, in turn: a slow spell of the machine
# during one run falls on both.
PAIR_ORDERS = (("off", "on", "on", "off"), ("on", "off", "off", "on"))


# --- seeding -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """How a backend's bulk loader wants UUIDs, timestamps and JSON documents: as the ORM
    writes them, so SQLite gets 32-digit hex ids, naive UTC text and JSON text, and asyncpg's
    COPY gets UUIDs, aware datetimes and JSON text (which json and jsonb columns both take)."""

    uuid: Callable[[uuid.UUID], Any]
    time: Callable[[datetime], Any]
    json: Callable[[Any], str]

    def encoders(self) -> dict[type, Callable[[Any], Any]]:
        """The encoder of each type of value the fake rows hold; other values go as they are."""
        return {
            uuid.UUID: self.uuid,
            datetime: self.time,
            dict: self.json,
            list: self.json,
            RunStatus: str,
            NodeStatus: str,
        }


def _sqlite_time(value: datetime) -> str:
    # What UTCDateTime writes on SQLite: naive UTC text, always with microseconds.
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


SQLITE_CODEC = Codec(uuid=lambda value: value.hex, time=_sqlite_time, json=json.dumps)
POSTGRES_CODEC = Codec(uuid=lambda value: value, time=lambda value: value, json=json.dumps)


Row = tuple[Any, ...]


def row_encoder(codec: Codec, columns: Sequence[str]) -> Callable[[dict[str, Any]], Row]:
    """A function turning a fake row (column name to value) into the tuple the loader takes."""
    encoders = codec.encoders()

    def encode(row: dict[str, Any]) -> Row:
        values = [row[name] for name in columns]
        return tuple(v if (f := encoders.get(type(v))) is None else f(v) for v in values)

    return encode


class Sink(Protocol):
    async def write(self, table: str, columns: Sequence[str], rows: list[Row]) -> None:
        """Insert `rows` into `table` in one transaction."""


@dataclass(frozen=True, slots=True)
class RunRef:
    """What the events and the cursors need of a seeded run."""

    id: uuid.UUID
    created_at: datetime
    node_ids: tuple[uuid.UUID, ...]
    node_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Dataset:
    """The seeded database's landmarks the endpoints and the checks are built from."""

    runs: int
    events: int
    big_run_id: uuid.UUID
    runs_cursor: str
    first_run_after_cursor: uuid.UUID
    events_cursor: str
    event_after_cursor: int


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def run_status(rng: random.Random, age_rank: int) -> RunStatus:
    """Recent runs are still in flight; older ones mostly succeeded."""
    if age_rank < 20:
        return rng.choice((RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING))
    statuses = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.RUNNING)
    return rng.choices(statuses, weights=(82, 11, 6, 1))[0]


def make_run(rng: random.Random, index: int, runs: int, start: datetime) -> FakeRun:
    """The run `index` in creation order; run 0, the oldest, is the big long-running one."""
    step_us = int(SPAN / timedelta(microseconds=1)) // runs
    created_at = start + timedelta(microseconds=index * step_us + rng.randrange(step_us))
    if index == 0:
        title = "Continuous monitoring of competitor pricing pages"
        return fake_run(rng, created_at, RunStatus.RUNNING, 6, title=title)
    return fake_run(rng, created_at, run_status(rng, runs - 1 - index), rng.randint(2, 6))


async def seed_runs(
    sink: Sink, codec: Codec, rng: random.Random, runs: int, start: datetime
) -> list[RunRef]:
    """Insert `runs` runs with their nodes, oldest first, in batches; return their refs."""
    refs: list[RunRef] = []
    encode_run, encode_node = row_encoder(codec, RUN_COLUMNS), row_encoder(codec, NODE_COLUMNS)
    for batch in chunks(range(runs), RUN_BATCH):
        fakes = [make_run(rng, index, runs, start) for index in batch]
        rows = [encode_run({**f.run, "task_type": f.run["task_spec"]["type"]}) for f in fakes]
        await sink.write("runs", RUN_COLUMNS, rows)
        nodes = [encode_node(node) for f in fakes for node in f.nodes]
        await sink.write("nodes", NODE_COLUMNS, nodes)
        refs.extend(
            RunRef(
                id=f.run["id"],
                created_at=f.run["created_at"],
                node_ids=tuple(n["id"] for n in f.nodes),
                node_keys=tuple(n["key"] for n in f.nodes),
            )
            for f in fakes
        )
    return refs


def event_data(rng: random.Random, kind: str, node_key: str | None) -> dict[str, Any]:
    if kind == "run.created":
        return {"created_by": "admin", "source": "api"}
    if kind == "llm.call":
        prompt, completion = rng.randint(400, 3000), rng.randint(150, 1200)
        return {
            "node": node_key,
            "provider": "openai",
            "model": "gpt-4o-mini",
            "latency_ms": rng.randint(300, 9000),
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
            "cost": round(prompt * 0.15e-6 + completion * 0.6e-6, 6),
        }
    if kind == "artifact.written":
        return {"node": node_key, "name": f"{node_key}.md", "size": rng.randint(800, 40_000)}
    return {"node": node_key, "attempt": 1}


class EventMaker:
    """Builds event rows; each (type, node) draws its data from 64 documents encoded once, which
    keeps a million events quick to make while their sizes and shapes stay realistic."""

    variants = 64

    def __init__(self, rng: random.Random, codec: Codec) -> None:
        self.rng, self.codec = rng, codec
        self.documents: dict[tuple[str, str | None], list[str]] = {}

    def data(self, kind: str, node_key: str | None) -> str:
        pool = self.documents.get((kind, node_key))
        if pool is None:
            made = (event_data(self.rng, kind, node_key) for _ in range(self.variants))
            pool = self.documents[kind, node_key] = [self.codec.json(doc) for doc in made]
        return pool[int(self.rng.random() * self.variants)]

    def row(self, event_id: int, run: RunRef, step: int, ts: datetime) -> Row:
        story = BIG_STORY if event_id % BIG_RUN_SHARE == 0 else RUN_STORY
        kind = story[step % len(story)]
        node = step % len(run.node_ids) if run.node_ids and kind != "run.created" else None
        node_id = None if node is None else self.codec.uuid(run.node_ids[node])
        node_key = None if node is None else run.node_keys[node]
        data = self.data(kind, node_key)
        return (event_id, self.codec.uuid(run.id), node_id, kind, self.codec.time(ts), data)


def other_run_steps(runs: int, count: int) -> Iterator[tuple[int, int]]:
    """(run index, the event's place in that run) for `count` events spread evenly over runs
    1..runs-1, oldest first."""
    previous, step = -1, 0
    for index in range(count):
        run_index = 1 + index * (runs - 1) // count
        step = step + 1 if run_index == previous else 0
        previous = run_index
        yield run_index, step


def event_rows(
    rng: random.Random, codec: Codec, refs: list[RunRef], total: int, start: datetime
) -> Iterator[Row]:
    """Events 1..total in id order: every 10th is the big run's (refs[0]), the others walk the
    remaining runs oldest first, about 9 to a run for the defaults."""
    maker, tick = EventMaker(rng, codec), SPAN / total
    others = other_run_steps(len(refs), total - total // BIG_RUN_SHARE)
    for event_id in range(1, total + 1):
        if event_id % BIG_RUN_SHARE == 0:
            step = event_id // BIG_RUN_SHARE - 1
            yield maker.row(event_id, refs[0], step, start + tick * event_id)
        else:
            run_index, step = next(others)
            run = refs[run_index]
            yield maker.row(event_id, run, step, run.created_at + timedelta(seconds=5 * step + 5))


def dataset_of(refs: list[RunRef], events: int) -> Dataset:
    """The deep cursors: after row 90% of the newest-first runs, after 90% of the big run."""
    newest_first = sorted(refs, key=lambda r: (r.created_at, r.id), reverse=True)
    deep = round(len(refs) * DEEP_FRACTION)
    last = newest_first[deep - 1]
    big_event_ids = range(BIG_RUN_SHARE, events + 1, BIG_RUN_SHARE)
    after = big_event_ids[round(len(big_event_ids) * DEEP_FRACTION) - 1]
    return Dataset(
        runs=len(refs),
        events=events,
        big_run_id=refs[0].id,
        runs_cursor=RUN_ORDER.cursor_of({"created_at": last.created_at, "id": last.id}),
        first_run_after_cursor=newest_first[deep].id,
        events_cursor=EVENT_ORDER.cursor_of({"id": after}),
        event_after_cursor=after,
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection while millions of acyclic rows are made: saves about a sixth."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def realistic_start() -> datetime:
    """When the realistic runs begin (they span a year up to now); bulk runs come before."""
    return datetime.now(UTC).replace(microsecond=0) - SPAN


async def seed(sink: Sink, codec: Codec, args: argparse.Namespace, start: datetime) -> Dataset:
    rng = random.Random(args.seed)
    with gc_paused():
        refs = await seed_runs(sink, codec, rng, args.runs, start)
        for rows in chunks(event_rows(rng, codec, refs, args.events, start), EVENT_BATCH):
            await sink.write("events", EVENT_COLUMNS, rows)
    return dataset_of(refs, args.events)


class SQLiteSink:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    async def write(self, table: str, columns: Sequence[str], rows: list[Row]) -> None:
        names = ", ".join(f'"{name}"' for name in columns)
        marks = ", ".join("?" * len(columns))
        with self.connection:
            self.connection.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


class PostgresSink:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def write(self, table: str, columns: Sequence[str], rows: list[Row]) -> None:
        await self.connection.copy_records_to_table(table, records=rows, columns=list(columns))


@contextmanager
def sqlite_sink(path: Path) -> Iterator[SQLiteSink]:
    """A bulk-load connection; the file is left in WAL mode, checkpointed, as the app runs it."""
    connection = sqlite3.connect(path, isolation_level="DEFERRED")
    # The title search index's triggers call it.
    register_sqlite_functions(connection)
    try:
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-524288"):
            connection.execute(f"PRAGMA {pragma}")
        yield SQLiteSink(connection)
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


@asynccontextmanager
async def postgres_sink(url: str) -> AsyncIterator[PostgresSink]:
    """A bulk-load connection; afterwards the event id sequence continues after the seeded ids
    and the tables are vacuumed and analyzed, as autovacuum would have done by then."""
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        yield PostgresSink(connection)
        await connection.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'id'), "
            "(SELECT coalesce(max(id), 1) FROM events))"
        )
        await connection.execute("VACUUM ANALYZE runs, nodes, events")
    finally:
        await connection.close()


DEEP_ROW = "SELECT created_at, id FROM runs ORDER BY created_at DESC, id DESC LIMIT 2 OFFSET {}"


def with_bulk(data: Dataset, bulk: int, deep_rows: Sequence[Any]) -> Dataset:
    """`data` with `bulk` more runs, and its runs cursor after row 90% of them all."""
    if not bulk:
        return data
    (created_at, run_id), (_, next_id) = deep_rows
    if isinstance(created_at, str):  # SQLite's text
        created_at = datetime.fromisoformat(created_at + "+00:00")
    cursor = RUN_ORDER.cursor_of({"created_at": created_at, "id": run_id})
    return replace(
        data,
        runs=data.runs + bulk,
        runs_cursor=cursor,
        first_run_after_cursor=uuid.UUID(str(next_id)),
    )


def deep_offset(data: Dataset, bulk: int) -> int:
    return round((data.runs + bulk) * DEEP_FRACTION) - 1


def seed_sqlite(path: Path, args: argparse.Namespace) -> Dataset:
    start = realistic_start()
    with sqlite_sink(path) as sink:
        data = asyncio.run(seed(sink, SQLITE_CODEC, args, start))
        if not args.bulk_runs:
            return data
        bulk_runs.seed_sqlite(sink.connection, args.bulk_runs, start)
        query = DEEP_ROW.format(deep_offset(data, args.bulk_runs))
        return with_bulk(data, args.bulk_runs, sink.connection.execute(query).fetchall())


async def seed_postgres(url: str, args: argparse.Namespace) -> Dataset:
    start = realistic_start()
    async with postgres_sink(url) as sink:
        data = await seed(sink, POSTGRES_CODEC, args, start)
        if not args.bulk_runs:
            return data
        await bulk_runs.seed_postgres(sink.connection, args.bulk_runs, start)
        await sink.connection.execute("VACUUM ANALYZE runs, nodes")
        query = DEEP_ROW.format(deep_offset(data, args.bulk_runs))
        return with_bulk(data, args.bulk_runs, await sink.connection.fetch(query))


# --- databases -----------------------------------------------------------------------------------


def disk_free_gb() -> float:
    return shutil.disk_usage(WORK).free / 2**30


def remove_sqlite_files() -> None:
    for path in WORK.glob("read_api.db*"):
        path.unlink()


@contextmanager
def sqlite_database(keep: bool) -> Iterator[str]:
    """A new SQLite file in bench/.work/, removed afterwards unless `keep`."""
    remove_sqlite_files()
    try:
        yield f"sqlite+aiosqlite:///{WORK / 'read_api.db'}"
    finally:
        if not keep:
            remove_sqlite_files()


@contextmanager
def kept_postgres_database(server: str) -> Iterator[str]:
    """A new database `bench_<random>` on `server`, left in place for `--reuse` (dropped by hand:
    `DROP DATABASE`)."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(postgres_admin(server, f'CREATE DATABASE "{name}"'))
    yield make_url(server).set(database=name).render_as_string(hide_password=False)


def landmarks_path(backend: str) -> Path:
    return WORK / f"read_api-{backend}.json"


def save_landmarks(backend: str, url: str, data: Dataset) -> None:
    """Where a kept database is and what `verify` and the endpoints need of it, for `--reuse`."""
    document = {"url": url, "dataset": asdict(data)}
    landmarks_path(backend).write_text(json.dumps(document, default=str, indent=2))


def load_landmarks(backend: str) -> tuple[str, Dataset]:
    path = landmarks_path(backend)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"nothing to reuse: no {path} (seed one with --keep first)") from None
    fields = document["dataset"]
    ids = {name: uuid.UUID(fields[name]) for name in ("big_run_id", "first_run_after_cursor")}
    return document["url"], Dataset(**{**fields, **ids})


@contextmanager
def seeded_database(backend: str, args: argparse.Namespace) -> Iterator[tuple[str, Dataset, float]]:
    """The database to load, its landmarks and the seconds its seeding took: the one a previous
    `--keep` left when `--reuse` (not seeded again), else a new one, seeded, removed at the end
    unless `--keep`."""
    if args.reuse:
        url, data = load_landmarks(backend)
        shown = make_url(url).render_as_string(hide_password=True)
        print(
            f"== {backend}: reusing {shown} ({data.runs:,} runs, {data.events:,} events)",
            flush=True,
        )
        yield url, data, 0.0
        return
    database: AbstractContextManager[str]
    if backend == "sqlite":
        database = sqlite_database(args.keep)
    else:
        server = postgres_server(required=True) or ""
        database = kept_postgres_database(server) if args.keep else postgres_database(server)
    with database as url:
        print(
            f"== {backend}: migrating and seeding {args.runs:,} runs, {args.events:,} events"
            f" and {args.bulk_runs:,} bulk runs; disk free: {disk_free_gb():.0f} GB",
            flush=True,
        )
        started = time.perf_counter()
        data = build_database(backend, url, args)
        if args.keep:
            save_landmarks(backend, url, data)
        yield url, data, time.perf_counter() - started


def build_database(backend: str, url: str, args: argparse.Namespace) -> Dataset:
    migrate(url)
    if backend == "sqlite":
        return seed_sqlite(Path(make_url(url).database or ""), args)
    return asyncio.run(seed_postgres(url, args))


# --- the server ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    pid: int
    base_url: str


def pinned(cpu: int) -> list[str]:
    """A `taskset` prefix running a command on `cpu`, when taskset and that CPU exist."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu)]
    return []


def server_env(
    url: str, args: argparse.Namespace, settings: Mapping[str, str] = MappingProxyType({})
) -> dict[str, str]:
    """The benchmark's settings: the API alone (a worker in it would start the seeded runs,
    whose nodes name real providers, and compete with the reads for CPU), then `settings`."""
    pool = {"DB_POOL_SIZE": str(args.pool_size)} if args.pool_size else {}
    return service_env(
        url, ARTIFACTS_DIR=str(WORK / "artifacts"), WORKER_IN_API="0", **pool, **settings
    )


def server_command(port: int) -> list[str]:
    return [
        *pinned(0), sys.executable, "-m", "uvicorn", "bench.ceiling_app:create_bench_app",
        "--factory", "--host", HOST, "--port", str(port), "--loop", "uvloop",
        "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"X-API-Key": API_KEY})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def move_backends(database: str, cpu: int) -> None:
    """Pin every PostgreSQL server process serving `database` to `cpu`: their process titles
    read `postgres: ... <user> <database> <client> ...`."""
    needle = f" {database} ".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
            ours = title.startswith(b"postgres: ") and needle in title
            if ours and os.sched_getaffinity(int(entry.name)) != {cpu}:
                os.sched_setaffinity(int(entry.name), {cpu})
        except (OSError, ValueError):  # gone meanwhile, or not ours to move
            continue


@contextmanager
def backends_pinned(url: str, cpu: int) -> Iterator[None]:
    """While the block runs, keep the PostgreSQL server processes of `url`'s database on `cpu`
    (checked every RSS_INTERVAL: the pool opens connections as the load needs them); nothing
    for SQLite, on one CPU, or where processes cannot be moved (not Linux, another user's)."""
    database = make_url(url).database
    if (
        is_sqlite(url)
        or not database
        or (os.cpu_count() or 1) <= cpu
        or not hasattr(os, "sched_setaffinity")
    ):
        yield
        return
    done = threading.Event()

    def keep_moving() -> None:
        while not done.wait(RSS_INTERVAL):
            move_backends(database, cpu)

    thread = threading.Thread(target=keep_moving, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextmanager
def serve(
    name: str,
    url: str,
    args: argparse.Namespace,
    settings: Mapping[str, str] = MappingProxyType({}),
) -> Iterator[Server]:
    """One uvicorn worker on CPU 0 serving the bench app on `url`, configured by `settings` too,
    the database's server processes on CPU 1 (PostgreSQL); its output goes to
    `server-<name>.log`."""
    port = free_port()
    log = WORK / f"server-{name}.log"
    env = server_env(url, args, settings)
    with spawn(server_command(port), env, WORK, log) as process, backends_pinned(url, 1):
        wait_ready(process, f"http://{HOST}:{port}", log)
        yield Server(pid=process.pid, base_url=f"http://{HOST}:{port}")


# --- endpoints and their checks ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    path: str
    # wrk's connections; 0: --connections. The latency targets are taken one request at a time.
    connections: int = 0
    # False: a search that finds fewer runs than a page (at least one).
    full: bool = True


def endpoints(data: Dataset) -> list[Endpoint]:
    events = f"/events?run_id={data.big_run_id}&limit={PAGE}"
    return [
        Endpoint("ceiling", CEILING_PATH),
        Endpoint("runs first page", f"/runs?limit={PAGE}"),
        Endpoint("runs deep page", f"/runs?limit={PAGE}&cursor={data.runs_cursor}"),
        Endpoint("events first page", events),
        Endpoint("events deep page", f"{events}&cursor={data.events_cursor}"),
        *(
            Endpoint(f"{name} c=1", path, 1, full=name != "runs q rare")
            for name, path in ONE_AT_A_TIME.items()
        ),
        Endpoint("runs deep page c=1", f"/runs?limit={PAGE}&cursor={data.runs_cursor}", 1),
    ]


def fetch_page(server: Server, endpoint: Endpoint) -> list[dict[str, Any]]:
    status, body = get(server.base_url + endpoint.path)
    if status != 200:
        raise BenchError(f"{endpoint.name}: {endpoint.path} answered {status}: {body[:300]!r}")
    items = json.loads(body)["items"]
    if not endpoint.full and items:
        return items
    if len(items) != PAGE:
        raise BenchError(f"{endpoint.name}: expected {PAGE} items, got {len(items)}")
    return items


def verify(server: Server, data: Dataset) -> None:
    """One call per endpoint: a 200 with a full page, and the pages the cursors promise."""
    pages = {endpoint.name: fetch_page(server, endpoint) for endpoint in endpoints(data)}
    if not any(sum(item["node_counts"].values()) for item in pages["runs first page"]):
        raise BenchError("runs first page: every run has zero nodes")
    if pages["runs deep page"][0]["id"] != str(data.first_run_after_cursor):
        raise BenchError("runs deep page: does not start after the cursor's run")
    deep_events = pages["events deep page"]
    if deep_events[0]["id"] <= data.event_after_cursor:
        raise BenchError("events deep page: does not start after the cursor's event")
    if {item["run_id"] for item in deep_events} != {str(data.big_run_id)}:
        raise BenchError("events deep page: holds events of another run")


# --- load ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    timeouts: int
    peak_rss_mb: float


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_latency(output: str, percentile: int) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if match is None:
        raise BenchError(f"no {percentile}% latency in wrk's output:\n{output}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_errors(output: str) -> tuple[int, int]:
    """The answers that were not 2xx or 3xx, and the requests wrk gave up on (its 2 s timeout):
    told apart, since the first are the server's fault and the second may be the machine's."""
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    timeouts = re.search(r"Socket errors:.*?timeout (\d+)", output)
    return (int(non_2xx.group(1)) if non_2xx else 0, int(timeouts.group(1)) if timeouts else 0)


def wrk(url: str, seconds: int, connections: int) -> str:
    command_line = [
        *pinned(1), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
        "-H", f"X-API-Key: {API_KEY}", url,
    ]  # fmt: skip
    done = subprocess.run(
        command_line, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


def read_status_kb(pid: int, key: str) -> int:
    """A `/proc/<pid>/status` figure in kB (VmRSS, VmHWM), 0 when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


@contextmanager
def rss_sampler(pid: int) -> Iterator[list[int]]:
    """Sample the process's VmRSS every 0.2 s while the block runs; the list gets the peak."""
    peak = [read_status_kb(pid, "VmRSS")]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(RSS_INTERVAL):
            peak[0] = max(peak[0], read_status_kb(pid, "VmRSS"))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def load(server: Server, endpoint: Endpoint, args: argparse.Namespace) -> Sample:
    url = server.base_url + endpoint.path
    connections = endpoint.connections or args.connections
    if args.warmup:
        wrk(url, args.warmup, connections)
    with rss_sampler(server.pid) as peak:
        output = wrk(url, args.duration, connections)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise BenchError(f"no Requests/sec in wrk's output:\n{output}")
    non_2xx, timeouts = parse_errors(output)
    return Sample(
        rps=float(rps.group(1)),
        p50_ms=parse_latency(output, 50),
        p99_ms=parse_latency(output, 99),
        non_2xx=non_2xx,
        timeouts=timeouts,
        peak_rss_mb=peak[0] / 1024,
    )


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """An endpoint's medians over the repeats (non-2xx answers, timeouts and RSS: the worst)."""

    endpoint: str
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    timeouts: int
    peak_rss_mb: float
    samples: list[Sample] = field(repr=False)


def summarize(endpoint: str, samples: list[Sample]) -> Result:
    return Result(
        endpoint=endpoint,
        rps=statistics.median(s.rps for s in samples),
        p50_ms=statistics.median(s.p50_ms for s in samples),
        p99_ms=statistics.median(s.p99_ms for s in samples),
        non_2xx=max(s.non_2xx for s in samples),
        timeouts=max(s.timeouts for s in samples),
        peak_rss_mb=max(s.peak_rss_mb for s in samples),
        samples=samples,
    )


def measure(server: Server, targets: list[Endpoint], args: argparse.Namespace) -> list[Result]:
    samples: dict[str, list[Sample]] = {endpoint.name: [] for endpoint in targets}
    for repeat in range(1, args.repeat + 1):
        for endpoint in targets:
            sample = load(server, endpoint, args)
            samples[endpoint.name].append(sample)
            print(
                f"  [{repeat}/{args.repeat}] {endpoint.name:<18} {sample.rps:8.1f} req/s  "
                f"p50 {sample.p50_ms:7.2f} ms  p99 {sample.p99_ms:7.2f} ms",
                flush=True,
            )
    return [summarize(name, runs) for name, runs in samples.items()]


@dataclass(frozen=True, slots=True)
class Target:
    label: str
    value: float
    limit: float
    unit: str
    at_least: bool

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit


@dataclass(frozen=True, slots=True)
class ObservabilityCost:
    """The runs first page served with metrics and Sentry off and on by pairs of servers, each
    pair loaded off, on, on, off (or on, off, off, on)."""

    off: Result
    on: Result
    sentry_envelopes: int

    @property
    def pair_percents(self) -> list[float]:
        """Share of the req/s each pair lost with them on."""
        per_pair = len(PAIR_ORDERS[0]) // 2
        off, on = self.off.samples, self.on.samples
        return [
            100
            * (
                1
                - sum(s.rps for s in on[i : i + per_pair])
                / sum(s.rps for s in off[i : i + per_pair])
            )
            for i in range(0, len(off), per_pair)
        ]

    @property
    def percent(self) -> float:
        return statistics.median(self.pair_percents)


@dataclass(frozen=True, slots=True)
class Report:
    backend: str
    runs: int
    events: int
    seed_seconds: float
    results: list[Result]
    peak_rss_mb: float
    vm_hwm_mb: float
    # None with --list-only or --one-at-a-time.
    observability: ObservabilityCost | None

    def result(self, endpoint: str) -> Result:
        return next(r for r in self.results if r.endpoint == endpoint)

    def deep_ratios(self) -> list[Target]:
        """The deep pages' targets; none when they were not loaded (--list-only)."""
        if not any(r.endpoint == "runs deep page" for r in self.results):
            return []
        first = self.result("runs first page")
        runs_ratio = self.result("runs deep page").p50_ms / first.p50_ms
        events = self.result("events deep page").p50_ms / self.result("events first page").p50_ms
        return [
            Target("runs deep p50 / first p50", runs_ratio, TARGET_DEEP_RATIO, "x", False),
            Target("events deep p50 / first p50", events, TARGET_DEEP_RATIO, "x", False),
        ]

    def ceiling_share(self) -> list[Target]:
        """The first page's share of the ceiling; none when they were not loaded
        (--one-at-a-time)."""
        if not any(r.endpoint == "ceiling" for r in self.results):
            return []
        share = 100 * self.result("runs first page").rps / self.result("ceiling").rps
        return [Target("runs first page req/s / ceiling", share, TARGET_CEILING_SHARE, "%", True)]

    def targets(self) -> list[Target]:
        return [
            *self.ceiling_share(),
            *self.deep_ratios(),
            Target("peak RSS (sampled VmRSS)", self.peak_rss_mb, TARGET_RSS_MB, "MB", False),
            *(
                Target(f"{r.endpoint} p99", r.p99_ms, TARGET_ONE_AT_A_TIME_P99_MS, "ms", False)
                for r in self.results
                if r.endpoint.endswith("c=1")
            ),
            *(
                [
                    Target(
                        "req/s lost to metrics + Sentry",
                        self.observability.percent,
                        TARGET_OBSERVABILITY_COST,
                        "%",
                        False,
                    )
                ]
                if self.observability
                else []
            ),
        ]


def counted_requests(server: Server, route: str) -> float:
    """What the served /metrics says about GET `route` answered 2xx."""
    status, body = get(server.base_url + "/metrics")
    if status != 200:
        raise BenchError(f"/metrics answered {status} with metrics on")
    pattern = rf'^crew_http_requests_total{{method="GET",route="{route}",status="2xx"}} (\S+)$'
    match = re.search(pattern, body.decode(), re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@contextmanager
def observed_pair(
    backend: str, url: str, args: argparse.Namespace, dsn: str
) -> Iterator[dict[str, Server]]:
    """Two fresh servers with one hash seed, metrics and Sentry off and on. Two processes of the
    same app differ by up to 10% in req/s (memory layout), so every pair is new."""
    seed = {"PYTHONHASHSEED": str(random.randrange(2**32))}
    observed = {**seed, "METRICS_ENABLED": "1", "SENTRY_DSN": dsn, "SENTRY_ENV": "bench"}
    with (
        serve(f"{backend}-observability-off", url, args, seed) as off,
        serve(f"{backend}-observability-on", url, args, observed) as on,
    ):
        yield {"off": off, "on": on}


def measure_observability(
    backend: str, url: str, data: Dataset, args: argparse.Namespace
) -> ObservabilityCost:
    """Load the runs first page with metrics and Sentry off and on, on `--pairs` fresh pairs of
    servers, each loaded in one of PAIR_ORDERS."""
    endpoint = next(e for e in endpoints(data) if e.name == OBSERVED_ENDPOINT)
    samples: dict[str, list[Sample]] = {"off": [], "on": []}
    with sentry_sink() as (dsn, envelopes):
        for pair in range(1, args.pairs + 1):
            with observed_pair(backend, url, args, dsn) as servers:
                for label in PAIR_ORDERS[pair % 2]:
                    sample = load(servers[label], endpoint, args)
                    samples[label].append(sample)
                    print(
                        f"  [{pair}/{args.pairs}] runs first page, observability {label:<3} "
                        f"{sample.rps:8.1f} req/s  p99 {sample.p99_ms:7.2f} ms",
                        flush=True,
                    )
                # Its measured runs alone answered about req/s x duration each.
                answered = sum(s.rps for s in samples["on"][-len(PAIR_ORDERS[0]) // 2 :])
                if counted_requests(servers["on"], "/runs") < 0.9 * answered * args.duration:
                    raise BenchError("the observed server did not count the requests it answered")
        sent = len(envelopes)
    return ObservabilityCost(
        off=summarize("observability off", samples["off"]),
        on=summarize("observability on", samples["on"]),
        sentry_envelopes=sent,
    )


def bench_backend(backend: str, args: argparse.Namespace) -> Report:
    with seeded_database(backend, args) as (url, data, seed_seconds):
        print(f"   seeded in {seed_seconds:.1f} s; serving and loading", flush=True)
        loaded = endpoints(data)
        if args.list_only:
            loaded = [endpoint for endpoint in loaded if endpoint.name in LIST_ONLY]
        if args.one_at_a_time:
            loaded = [endpoint for endpoint in loaded if endpoint.connections == 1]
        with serve(backend, url, args) as server:
            verify(server, data)
            results = measure(server, loaded, args)
            hwm = read_status_kb(server.pid, "VmHWM") / 1024
        observed = not (args.list_only or args.one_at_a_time)
        observability = measure_observability(backend, url, data, args) if observed else None
    peak = max(result.peak_rss_mb for result in results)
    return Report(backend, data.runs, data.events, seed_seconds, results, peak, hwm, observability)


def print_report(report: Report, args: argparse.Namespace) -> None:
    print(
        f"\n{report.backend}: {report.runs:,} runs, {report.events:,} events, seeded in "
        f"{report.seed_seconds:.1f} s; wrk -c{args.connections} -d{args.duration}s, "
        f"median of {args.repeat}"
    )
    print(f"machine at the end: {machine_state()}")
    print(
        f"{'endpoint':<20}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'RSS MB':>9}"
        f"{'non-2xx':>9}{'timeouts':>10}"
    )
    for r in report.results:
        print(
            f"{r.endpoint:<20}{r.rps:>10.1f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}"
            f"{r.peak_rss_mb:>9.1f}{r.non_2xx:>9}{r.timeouts:>10}"
        )
    for target in report.targets():
        sign = ">=" if target.at_least else ("<" if target.unit == "MB" else "<=")
        verdict = "PASS" if target.passed else ("not judged" if args.smoke else "FAIL")
        print(
            f"  {target.label:<34}{target.value:>8.2f} {target.unit:<3}"
            f"(target {sign} {target.limit:g}{target.unit})  {verdict}"
        )
    print(f"  {'server VmHWM':<34}{report.vm_hwm_mb:>8.2f} MB")
    cost = report.observability
    if cost is None:
        print("  metrics + Sentry cost: not measured (--list-only or --one-at-a-time)")
        return
    print(
        f"  runs first page, metrics + Sentry off {cost.off.rps:.1f} req/s (p99 "
        f"{cost.off.p99_ms:.2f} ms), on {cost.on.rps:.1f} req/s (p99 {cost.on.p99_ms:.2f} ms); "
        f"req/s lost per pair: {', '.join(f'{p:.1f}%' for p in cost.pair_percents)}; "
        f"{cost.sentry_envelopes} envelope(s) reached the Sentry endpoint"
    )


def report_json(reports: list[Report]) -> str:
    documents = [
        {**asdict(report), "targets": [{**asdict(t), "passed": t.passed} for t in report.targets()]}
        for report in reports
    ]
    return json.dumps(documents, indent=2)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--repeat", type=int, default=3, help="times the whole set is run")
    parser.add_argument(
        "--pairs", type=int, default=5, help="server pairs measuring metrics + Sentry off and on"
    )
    parser.add_argument("--runs", type=int, default=100_000, help="runs to seed")
    parser.add_argument("--events", type=int, default=1_000_000, help="events to seed")
    parser.add_argument(
        "--bulk-runs",
        type=int,
        default=0,
        help="lean runs generated by the database, older than the others (bench/bulk_runs.py)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the data")
    parser.add_argument("--pool-size", type=int, default=0, help="DB_POOL_SIZE (0: the default)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the database (bench/.work/read_api.db, or the PostgreSQL bench_<random>) and "
        "what the endpoints need of it in bench/.work/read_api-<backend>.json, for --reuse",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="load the database a run with --keep left, as it is: no seeding (--runs, --events "
        "and --bulk-runs are those it was seeded with); it stays",
    )
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="load the c=1 endpoints alone (the latency targets): no ceiling, no c=32 loads, "
        "no observability pairs",
    )
    parser.add_argument(
        "--list-only",
        action="store_true",
        help="load the ceiling and the runs first page alone (no observability pairs): the "
        "runs list's share of the ceiling in minutes",
    )
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.events, args.connections = 1_000, 10_000, 4
        args.duration, args.warmup, args.repeat, args.pairs = 1, 0, 1, 1
    if args.runs < 1_000 or args.events < 10_000:
        parser.error("--runs >= 1,000 and --events >= 10,000: the deep pages must be full")
    if not 1 <= args.duration <= 600 or not 1 <= args.repeat <= 20 or not 0 <= args.warmup <= 60:
        parser.error("--duration 1-600, --repeat 1-20, --warmup 0-60")
    if not 1 <= args.pairs <= 20:
        parser.error("--pairs 1-20")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    WORK.mkdir(parents=True, exist_ok=True)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    reports = [bench_backend(backend, args) for backend in backends]
    for report in reports:
        print_report(report, args)
    if args.json:
        print(report_json(reports))
    if args.smoke:
        # Every page was checked (`verify`); rates over a second on a small table mean nothing.
        print("\nsmoke run: the targets are not judged")
        return 0
    return 0 if all(t.passed for r in reports for t in r.targets()) else 1


if __name__ == "__main__":
    run(main)
