"""POST /keys/{name}/revoke keeps an admin able to manage keys over HTTP: with no admin key in
the settings (API_KEY, ADMIN_TOKEN), the last stored admin key is not revoked, even by two
admins revoking each other at once."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from apps.api.app import create_app
from apps.core.database import SessionFactory, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.control import api_keys
from apps.orchestrator.model.models import ApiKey, KeyRole
from tests.conftest import client_of, empty_tables

ROUNDS = 10


@pytest.fixture
async def keyless_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with no admin key in its settings: stored keys are the only ones."""
    application = create_app(settings.model_copy(update={"api_key": None, "admin_token": None}))
    async with application.router.lifespan_context(application):
        try:
            yield application
        finally:
            await empty_tables(application.state.sessions)


async def _admin(sessions: SessionFactory, name: str) -> dict[str, str]:
    async with unit_of_work(sessions) as session:
        created = await api_keys.create_key(session, name, KeyRole.ADMIN)
    return {"X-API-Key": created.secret}


async def _active_admins(sessions: SessionFactory) -> list[str]:
    async with sessions() as session:
        names = await session.scalars(
            select(ApiKey.name).where(ApiKey.role == KeyRole.ADMIN, ApiKey.revoked_at.is_(None))
        )
        return sorted(names)


async def test_the_last_admin_key_may_not_revoke_itself(keyless_app: FastAPI) -> None:
    sessions = keyless_app.state.sessions
    root = await _admin(sessions, "root")
    async with client_of(keyless_app) as client:
        response = await client.post("/keys/root/revoke", headers=root)
        still = await client.get("/keys", headers=root)

    assert response.status_code == 409
    assert "last admin key" in response.json()["detail"]
    assert still.status_code == 200


async def test_an_admin_key_is_revoked_while_another_remains(keyless_app: FastAPI) -> None:
    sessions = keyless_app.state.sessions
    root = await _admin(sessions, "root")
    await _admin(sessions, "spare")
    async with client_of(keyless_app) as client:
        response = await client.post("/keys/spare/revoke", headers=root)

    assert response.status_code == 200
    assert await _active_admins(sessions) == ["root"]


async def test_two_admins_revoking_each_other_at_once_leave_one(keyless_app: FastAPI) -> None:
    sessions = keyless_app.state.sessions
    async with client_of(keyless_app) as client:
        for round_ in range(ROUNDS):
            first, second = f"first-{round_}", f"second-{round_}"
            keys = {first: await _admin(sessions, first), second: await _admin(sessions, second)}
            async with unit_of_work(sessions) as session:  # the survivor of the round before
                for name in await _active_admins(sessions):
                    if name not in keys:
                        await api_keys.revoke_key(session, name)

            answers = await asyncio.gather(
                client.post(f"/keys/{second}/revoke", headers=keys[first]),
                client.post(f"/keys/{first}/revoke", headers=keys[second]),
            )

            # The loser's own key may be revoked before its request is even authenticated.
            assert sorted(a.status_code for a in answers) in ([200, 401], [200, 409])
            assert len(await _active_admins(sessions)) == 1


async def test_with_api_key_set_every_stored_admin_key_may_be_revoked(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    await _admin(sessions, "root")

    response = await client.post("/keys/root/revoke")

    assert response.status_code == 200
    assert await _active_admins(sessions) == []
