"""Console sessions in the domain: found while live, gone when expired, revoked or signed out,
and a session of the API_KEY setting ends when the setting changes."""

from datetime import timedelta

from fastapi import FastAPI

from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.control import api_keys, console_sessions
from apps.orchestrator.control.console_sessions import SessionOwner
from apps.orchestrator.model.models import KeyRole, utcnow

HOUR = timedelta(hours=1)


async def test_a_key_session_lives_until_it_expires_or_its_key_is_revoked(
    app: FastAPI, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        key = await api_keys.create_key(session, "olga", KeyRole.OPERATOR)
    owner = SessionOwner("olga", KeyRole.OPERATOR, key.row.id)
    engine = app.state.engine
    async with engine.begin() as connection:
        token = await console_sessions.open_session(connection, owner, HOUR)
        assert await console_sessions.find_session(connection, token, None, utcnow()) == owner
        later = utcnow() + 2 * HOUR
        assert await console_sessions.find_session(connection, token, None, later) is None
        assert await console_sessions.find_session(connection, token + "x", None, utcnow()) is None
    async with unit_of_work(sessions) as session:
        await api_keys.revoke_key(session, "olga")
    async with engine.connect() as connection:
        assert await console_sessions.find_session(connection, token, None, utcnow()) is None


async def test_a_setting_session_ends_when_the_setting_changes_or_on_sign_out(
    app: FastAPI,
) -> None:
    owner = SessionOwner("admin", KeyRole.ADMIN, None)
    engine = app.state.engine
    async with engine.begin() as connection:
        token = await console_sessions.open_session(connection, owner, HOUR, "hash-a")
        assert await console_sessions.find_session(connection, token, "hash-a", utcnow()) == owner
        assert await console_sessions.find_session(connection, token, "hash-b", utcnow()) is None
        assert await console_sessions.find_session(connection, token, None, utcnow()) is None
        await console_sessions.end_session(connection, token)
        assert await console_sessions.find_session(connection, token, "hash-a", utcnow()) is None
