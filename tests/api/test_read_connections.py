"""On PostgreSQL, routes that only read run their statements outside a transaction: one round
trip each, without asyncpg's BEGIN before them and the ROLLBACK that resets the connection after.
Under READ COMMITTED each statement had a snapshot of its own anyway."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from apps.api.app import create_app
from tests.conftest import settings_for

TASK = {"title": "Read outside a transaction", "task_spec": {"type": "demo"}}


@pytest.fixture
async def app(postgres_database: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    application = create_app(settings_for(postgres_database, tmp_path))
    async with application.router.lifespan_context(application):
        yield application


async def test_read_routes_hold_no_transaction_open(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    run_id = (await client.post("/tasks", json=TASK)).json()["id"]
    in_transaction: list[bool] = []

    def executed(connection: Any, *_: Any) -> None:
        in_transaction.append(connection.connection.driver_connection.is_in_transaction())

    engine = app.state.engine.sync_engine
    event.listen(engine, "after_cursor_execute", executed)
    try:
        answers = [
            await client.get(f"/runs/{run_id}"),
            await client.get(f"/runs/{run_id}/nodes"),
            await client.get("/runs", params={"q": "outside"}),
        ]
    finally:
        event.remove(engine, "after_cursor_execute", executed)

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert answers[2].json()["items"][0]["id"] == run_id
    assert in_transaction and not any(in_transaction)
