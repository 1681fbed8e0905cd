"""The request's unit of work commits once, before the response is sent."""

import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from apps.api.dependencies import DbSession
from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.model.models import Run
from tests.factories import create_run


def _add_run_route(app: FastAPI) -> None:
    async def add_run(session: DbSession, run_id: uuid.UUID) -> dict[str, str]:
        session.add(Run(id=run_id, title="added", task_spec={"type": "demo"}))
        return {"status": "added"}

    app.add_api_route("/test/runs/{run_id}", add_run, methods=["POST"])


async def _post(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path)


async def test_a_write_is_committed_when_the_answer_arrives(
    app: FastAPI, sessions: SessionFactory
) -> None:
    _add_run_route(app)
    run_id = uuid.uuid4()

    response = await _post(app, f"/test/runs/{run_id}")

    assert response.status_code == 200
    async with sessions() as session:
        assert await session.scalar(select(Run.title).where(Run.id == run_id)) == "added"


async def test_a_failed_commit_is_the_answer_instead_of_a_success(
    app: FastAPI, sessions: SessionFactory
) -> None:
    _add_run_route(app)
    async with unit_of_work(sessions) as session:
        existing = await create_run(session, title="first")

    response = await _post(app, f"/test/runs/{existing.id}")

    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    async with sessions() as session:
        assert await session.scalar(select(Run.title).where(Run.id == existing.id)) == "first"
