"""A served API on PostgreSQL gives back the connections a burst of requests opened once they
have sat idle DB_POOL_IDLE_SECONDS, with no request after the burst, and serves the next burst."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import API_KEY, postgres_dsn, postgres_server_url
from tests.servers import api_process, free_port

IDLE_SECONDS = 1.0
SETTINGS = {
    "DB_POOL_SIZE": "1",
    "DB_MAX_OVERFLOW": "7",
    "DB_POOL_IDLE_SECONDS": str(IDLE_SECONDS),
    "WORKER_IN_API": "0",
    "LOG_LEVEL": "warning",
}
CONCURRENT = 40


@pytest.fixture
def served(postgres_database: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    with api_process(postgres_database, tmp_path, port, **SETTINGS):
        yield f"http://127.0.0.1:{port}"


async def _connections(database: str) -> int:
    admin = await asyncpg.connect(postgres_dsn(postgres_server_url()))
    try:
        count = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", make_url(database).database
        )
    finally:
        await admin.close()
    return int(count)


async def _burst(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": API_KEY}) as http:
        answers = await asyncio.gather(*(http.get("/runs") for _ in range(CONCURRENT)))
    assert {answer.status_code for answer in answers} == {200}


async def test_a_served_api_closes_what_a_burst_opened_once_idle(
    served: str, postgres_database: str
) -> None:
    await asyncio.sleep(2 * IDLE_SECONDS)
    quiet = await _connections(postgres_database)

    await _burst(served)
    after_burst = await _connections(postgres_database)
    assert after_burst > quiet

    deadline = time.monotonic() + IDLE_SECONDS + 10
    while await _connections(postgres_database) > quiet:
        assert time.monotonic() < deadline, "the burst's connections stayed open"
        await asyncio.sleep(0.1)

    await _burst(served)
    assert await _connections(postgres_database) > quiet
