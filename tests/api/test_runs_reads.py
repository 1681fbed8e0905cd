"""Where GET /runs reads: on SQLite a page the database writes runs on the readers of its own
(`core.read_connections`) and takes no connection of the engine's pool; what they cannot write
(a title search, a page in another time zone) reads through the engine, as every page does on
PostgreSQL. A failure of a reader is answered as any database's is."""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiosqlite
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from apps.core.database import SessionFactory, unit_of_work
from tests.api.pages import single_page
from tests.factories import create_run


@contextmanager
def pool_checkouts(app: FastAPI) -> Iterator[list[object]]:
    """Each connection the read engine's pool lends meanwhile."""
    checkouts: list[object] = []
    pool = app.state.read_engine.sync_engine.pool

    def lent(dbapi_connection: object, *_: Any) -> None:
        checkouts.append(dbapi_connection)

    event.listen(pool, "checkout", lent)
    try:
        yield checkouts
    finally:
        event.remove(pool, "checkout", lent)


def on_sqlite(app: FastAPI) -> bool:
    return bool(app.state.engine.dialect.name == "sqlite")


@pytest.fixture
async def titled(sessions: SessionFactory) -> list[str]:
    async with unit_of_work(sessions) as session:
        runs = [await create_run(session, title=title) for title in ("Weekly digest", "Audit")]
    return [str(run.id) for run in runs]


async def test_a_page_the_database_writes_takes_a_pool_connection_only_on_postgresql(
    app: FastAPI, client: httpx.AsyncClient, titled: list[str]
) -> None:
    with pool_checkouts(app) as checkouts:
        items = await single_page(client, "/runs", limit=50)

    assert {item["id"] for item in items} == set(titled)
    assert len(checkouts) == (0 if on_sqlite(app) else 1)
    readers = app.state.driver_reads.sqlite
    assert (readers is not None and readers.opened >= 1) == on_sqlite(app)


@pytest.mark.parametrize(
    ("params", "headers"),
    [({"q": "digest"}, {}), ({}, {"X-Timezone": "Europe/Paris"})],
    ids=["title search", "another zone"],
)
async def test_what_the_database_does_not_write_reads_through_the_engine(
    app: FastAPI,
    client: httpx.AsyncClient,
    titled: list[str],
    params: dict[str, str],
    headers: dict[str, str],
) -> None:
    with pool_checkouts(app) as checkouts:
        items = await single_page(client, "/runs", headers=headers, limit=50, **params)

    expected = titled[:1] if params else titled
    assert {item["id"] for item in items} == set(expected)
    assert len(checkouts) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_busy_database_on_a_reader_is_a_503_and_the_next_page_is_read(
    app: FastAPI,
    client: httpx.AsyncClient,
    titled: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetch_all = aiosqlite.Connection.execute_fetchall
    failures = [sqlite3.OperationalError("database is locked")]

    async def busy_once(self: aiosqlite.Connection, *args: Any) -> Any:
        if failures:
            raise failures.pop()
        return await fetch_all(self, *args)

    monkeypatch.setattr(aiosqlite.Connection, "execute_fetchall", busy_once)

    busy = await client.get("/runs?limit=50")
    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "1"
    assert busy.json() == {"detail": "the database is unavailable; try again shortly"}
    assert len(await single_page(client, "/runs", limit=50)) == len(titled)
