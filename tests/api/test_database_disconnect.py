"""On PostgreSQL, connections the server dropped (a restart, an operator's pg_terminate_backend)
cost at most the request that found one, answered 503 with Retry-After, and the pool replaces
them by itself: through SQLAlchemy's statements and through the runs page, which calls asyncpg
itself. Routes that only read, and the check of a stored key, hold no transaction open: one round
trip a statement, without asyncpg's BEGIN before it and the ROLLBACK that resets the connection
after."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from apps.api.app import create_app
from apps.core.database import SessionFactory, is_transient, unit_of_work
from apps.orchestrator.control import api_keys
from apps.orchestrator.model.models import ApiKey, KeyRole
from apps.orchestrator.reading.run_pages import run_page_json
from apps.orchestrator.reading.runs import RunFilter
from tests.conftest import postgres_dsn, settings_for

TASK = {"title": "After a disconnect", "task_spec": {"type": "demo"}}


@pytest.fixture
async def app(postgres_database: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    application = create_app(settings_for(postgres_database, tmp_path))
    async with application.router.lifespan_context(application):
        yield application


async def _terminate_every_connection(database_url: str) -> int:
    """What a restart or an operator does to the service's connections: each one's backend is
    terminated. How many there were."""
    admin = await asyncpg.connect(postgres_dsn(database_url))
    try:
        terminated = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    # The server closes each socket once its backend has gone.
    await asyncio.sleep(0.3)
    return len(terminated)


def _one(session: Session) -> int:
    return session.execute(text("SELECT 1")).scalar_one()


async def test_after_its_connections_are_terminated_the_api_answers_503_once_then_recovers(
    app: FastAPI, client: httpx.AsyncClient, postgres_database: str
) -> None:
    assert (await client.post("/tasks", json=TASK)).status_code == 202
    # Several connections in the pool, each of which will be dead.
    pages = await asyncio.gather(*(client.get("/runs?limit=50") for _ in range(4)))
    assert {page.status_code for page in pages} == {200}
    assert await _terminate_every_connection(postgres_database) >= 1

    answers = [await client.get("/runs?limit=50") for _ in range(6)]
    answers.append(await client.post("/tasks", json=TASK))
    answers += [await client.get("/runs?limit=50") for _ in range(3)]

    failed = [answer for answer in answers if answer.status_code >= 500]
    assert len(failed) <= 1
    for answer in failed:
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "1"
        assert answer.json()["detail"] == "the database is unavailable; try again shortly"
    assert answers[-1].status_code == 200
    assert len(answers[-1].json()["items"]) == 2


async def test_after_its_connections_are_terminated_an_events_page_fails_once_then_recovers(
    app: FastAPI, client: httpx.AsyncClient, postgres_database: str
) -> None:
    """An events page calls asyncpg itself too: a dead connection is a 503 at most once."""
    run = (await client.post("/tasks", json=TASK)).json()
    events = {"run_id": run["id"]}
    pages = await asyncio.gather(*(client.get("/events", params=events) for _ in range(4)))
    assert {page.status_code for page in pages} == {200}
    assert await _terminate_every_connection(postgres_database) >= 1

    answers = [await client.get("/events", params=events) for _ in range(6)]

    failed = [answer for answer in answers if answer.status_code >= 500]
    assert len(failed) <= 1
    assert {answer.status_code for answer in failed} <= {503}
    assert answers[-1].status_code == 200
    assert answers[-1].json()["items"][0]["type"] == "run.created"
    unknown = await client.get("/events", params={"run_id": str(uuid.uuid4())})
    assert unknown.status_code == 404


async def test_after_its_connections_are_terminated_a_transaction_fails_once_then_recovers(
    app: FastAPI, postgres_database: str
) -> None:
    transactions = app.state.transactions
    assert await transactions.run(_one) == 1
    await _terminate_every_connection(postgres_database)

    failures = 0
    for _ in range(3):
        try:
            assert await transactions.run(_one) == 1
        except Exception as error:
            # A worker takes a transient failure as the database's, and passes again.
            assert is_transient(error)
            failures += 1
    assert failures <= 1


async def test_a_connection_dropped_while_in_use_fails_the_runs_page_as_transient(
    app: FastAPI, client: httpx.AsyncClient, postgres_database: str
) -> None:
    """The runs page calls asyncpg itself: its error still reaches the API as SQLAlchemy's, a
    disconnect that invalidates the connection, and so a 503."""
    engine: AsyncEngine = app.state.engine
    async with engine.connect() as connection:
        assert await run_page_json(connection, RunFilter(), 50, None) is not None
        await _terminate_every_connection(postgres_database)
        with pytest.raises(DBAPIError) as raised:
            await run_page_json(connection, RunFilter(), 50, None)
    assert raised.value.connection_invalidated
    assert is_transient(raised.value)
    assert (await client.get("/runs?limit=50")).status_code == 200


@contextmanager
def statements_in_transaction(app: FastAPI) -> Iterator[list[bool]]:
    """Whether each statement the app's engine runs meanwhile ran inside a transaction."""
    in_transaction: list[bool] = []

    def executed(connection: Any, *_: Any) -> None:
        in_transaction.append(connection.connection.driver_connection.is_in_transaction())

    engine = app.state.engine.sync_engine
    event.listen(engine, "after_cursor_execute", executed)
    try:
        yield in_transaction
    finally:
        event.remove(engine, "after_cursor_execute", executed)


async def test_read_routes_hold_no_transaction_open(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    run_id = (await client.post("/tasks", json=TASK)).json()["id"]
    with statements_in_transaction(app) as in_transaction:
        answers = [
            await client.get(f"/runs/{run_id}"),
            await client.get(f"/runs/{run_id}/nodes"),
            await client.get("/runs", params={"q": "disconnect"}),
        ]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert answers[2].json()["items"][0]["id"] == run_id
    assert in_transaction and not any(in_transaction)


async def test_a_stored_key_is_checked_and_its_use_recorded_without_a_transaction(
    app: FastAPI, client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        key = await api_keys.create_key(session, "reader", KeyRole.VIEWER)
    with statements_in_transaction(app) as in_transaction:
        answers = [await client.get("/runs", headers={"X-API-Key": key.secret}) for _ in range(2)]

    assert [answer.status_code for answer in answers] == [200, 200]
    assert in_transaction and not any(in_transaction)
    async with sessions() as session:
        used = await session.scalar(select(ApiKey.last_used_at).where(ApiKey.name == "reader"))
    assert used is not None
