"""Millions of lean runs in minutes: rows the database generates itself, for `bench.read_api`'s
`--bulk-runs`.

Each bulk run is older than every run the realistic seeding writes, has two nodes (a draft that
succeeded, a review in the run's final status), a short title from a few templates (a sixth of
them name Globex, the word `?q=` looks for), a one-line spec and no events: the lists read only
runs and nodes, and events are where a figure needs them (the big run's, seeded as before). Ids
start with the row's number, so they arrive in index order, as time-ordered ids (UUIDv7) do.

SQLite: a recursive CTE per million rows through the app's own triggers (the title index's).
PostgreSQL: `generate_series` per million rows, with the title's trigram index dropped for the
load and built again after it, which is several times faster than growing it row by row.
"""

import sqlite3
import time
from datetime import datetime, timedelta

import asyncpg

BATCH = 1_000_000
STEP = timedelta(seconds=3)
ORGS = ("Acme Corp", "Globex", "Initech", "Umbrella Health", "Stark Logistics", "Wayne Capital")
TASKS = ("Quarterly report", "Release notes", "Support triage", "Market study")


def _case(expression: str, values: tuple[str, ...], base: int) -> str:
    branches = " ".join(f"WHEN {i + base} THEN '{value}'" for i, value in enumerate(values))
    return f"CASE {expression} {branches} END"


_STATUS = "CASE WHEN i % 9 = 0 THEN 'failed' WHEN i % 17 = 0 THEN 'cancelled' ELSE 'succeeded' END"
_ERROR = "CASE WHEN i % 9 = 0 THEN 'review failed: the provider answered 503' END"
_RUN_COLUMNS = (
    "id, title, status, task_spec, task_type, error, created_by, prompt_tokens, completion_tokens, "
    "total_tokens, cost, created_at, updated_at, started_at, finished_at"
)
_NODE_COLUMNS = (
    "id, run_id, key, position, role, prompt, status, attempt, max_attempts, provider, model, "
    "created_at, updated_at, started_at, finished_at"
)
_NODE_STATUS = "CASE WHEN k.position = 0 THEN 'succeeded' ELSE r.status END"
_KEYS = (
    "(SELECT 'draft' AS key, 0 AS position, 'writer' AS role "
    "UNION ALL SELECT 'review', 1, 'reviewer')"
)

SQLITE_RUNS = f"""
WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :last)
INSERT INTO runs ({_RUN_COLUMNS})
SELECT printf('%08x', i) || lower(hex(randomblob(12))),
       printf('%s for %s, batch %d', {_case("i % 4", TASKS, 0)}, {_case("i % 6", ORGS, 0)}, i),
       {_STATUS}, '{{"type": "demo"}}', 'demo', {_ERROR}, 'nightly-scheduler',
       1200, 300, 1500, 0.0045, ts, ts, ts, ts
FROM (SELECT i, strftime('%Y-%m-%d %H:%M:%f', :start + i * :step) || printf('%03d', i % 1000)
      AS ts FROM n)
"""
SQLITE_NODES = f"""
INSERT INTO nodes ({_NODE_COLUMNS})
SELECT substr(r.id, 1, 30) || printf('%02d', k.position), r.id, k.key, k.position, k.role,
       'Write it.', {_NODE_STATUS}, 1, 3, 'demo', 'demo-1',
       r.created_at, r.created_at, r.created_at, r.created_at
FROM runs AS r, {_KEYS} AS k
WHERE r.id >= printf('%08x', :first) AND r.id < printf('%08x', :last) AND r.created_at < :before
"""

POSTGRES_RUNS = f"""
INSERT INTO runs ({_RUN_COLUMNS})
SELECT (lpad(to_hex(i), 8, '0') || substr(md5(random()::text), 1, 24))::uuid,
       format('%s for %s, batch %s', {_case("i % 4", TASKS, 0)}, {_case("i % 6", ORGS, 0)}, i),
       {_STATUS}, '{{"type": "demo"}}'::json, 'demo', {_ERROR}, 'nightly-scheduler',
       1200, 300, 1500, 0.0045, ts, ts, ts, ts
FROM (SELECT i, $3::timestamptz + i * $4::interval + (i % 1000) * interval '1 microsecond' AS ts
      FROM generate_series($1::bigint, $2::bigint - 1) AS i) AS g
"""
POSTGRES_NODES = f"""
INSERT INTO nodes ({_NODE_COLUMNS})
SELECT (left(r.id::text, 34) || lpad(k.position::text, 2, '0'))::uuid, r.id, k.key,
       k.position, k.role, 'Write it.', {_NODE_STATUS}, 1, 3, 'demo', 'demo-1',
       r.created_at, r.created_at, r.created_at, r.created_at
FROM runs AS r, {_KEYS} AS k
WHERE r.id >= (lpad(to_hex($1::bigint), 8, '0') || repeat('0', 24))::uuid
  AND r.id < (lpad(to_hex($2::bigint), 8, '0') || repeat('0', 24))::uuid AND r.created_at < $3
"""
POSTGRES_TITLE_INDEX = "CREATE INDEX ix_runs_title_trgm ON runs USING gin (title gin_trgm_ops)"


def _julian(moment: datetime) -> float:
    return moment.timestamp() / 86_400 + 2_440_587.5


def _progress(done: int, count: int, started: float) -> None:
    print(
        f"   bulk runs: {done:,} of {count:,} in {time.perf_counter() - started:.0f} s", flush=True
    )


def seed_sqlite(connection: sqlite3.Connection, count: int, before: datetime) -> None:
    """`count` lean runs and their nodes, the newest created before `before`."""
    start = before - STEP * count
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        last = min(first + BATCH, count)
        step = STEP / timedelta(days=1)
        bounds = {"first": first, "last": last, "start": _julian(start), "step": step}
        with connection:
            connection.execute(SQLITE_RUNS, bounds)
            text_before = before.isoformat(" ", "microseconds")[:26]
            connection.execute(SQLITE_NODES, {"first": first, "last": last, "before": text_before})
        _progress(last, count, started)


async def seed_postgres(connection: asyncpg.Connection, count: int, before: datetime) -> None:
    """`count` lean runs and their nodes, the newest created before `before`."""
    start = before - STEP * count
    started = time.perf_counter()
    await connection.execute("DROP INDEX ix_runs_title_trgm")
    for first in range(0, count, BATCH):
        last = min(first + BATCH, count)
        async with connection.transaction():
            await connection.execute(POSTGRES_RUNS, first, last, start, STEP)
            await connection.execute(POSTGRES_NODES, first, last, before)
        _progress(last, count, started)
    await connection.execute("SET maintenance_work_mem = '1GB'")
    await connection.execute(POSTGRES_TITLE_INDEX)
    print(f"   title index built in {time.perf_counter() - started:.0f} s", flush=True)
