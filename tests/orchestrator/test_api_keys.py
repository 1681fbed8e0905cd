"""API keys: created with a secret shown once and stored as a hash, revoked, found by secret."""

import hashlib
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from apps.core.database import SessionFactory, unit_of_work
from apps.core.errors import Conflict, NotFound, Unprocessable
from apps.orchestrator.control import api_keys
from apps.orchestrator.model.models import ApiKey, KeyRole, utcnow


async def _create(
    sessions: SessionFactory, name: str = "alice", role: KeyRole = KeyRole.VIEWER
) -> api_keys.CreatedKey:
    async with unit_of_work(sessions) as session:
        return await api_keys.create_key(session, name, role)


async def _find(sessions: SessionFactory, secret: str) -> api_keys.ActiveKey | None:
    async with sessions() as session:
        return await api_keys.find_active_key(await session.connection(), secret)


async def test_a_key_is_stored_only_as_its_sha256(sessions: SessionFactory) -> None:
    created = await _create(sessions, role=KeyRole.OPERATOR)

    async with sessions() as session:
        row = (await session.execute(select(ApiKey.__table__))).one()
    assert created.secret.startswith("crew_")
    assert row.key_hash == hashlib.sha256(created.secret.encode()).hexdigest()
    assert row.key_prefix == created.secret[:12]
    assert all(created.secret not in str(value) for value in row)
    assert (row.name, row.role, row.last_used_at, row.revoked_at) == (
        "alice",
        "operator",
        None,
        None,
    )


async def test_every_key_is_new(sessions: SessionFactory) -> None:
    first, second = await _create(sessions, "a"), await _create(sessions, "b")

    assert first.secret != second.secret
    assert len(first.secret) == len("crew_") + 40


async def test_a_taken_name_is_a_conflict_even_once_revoked(sessions: SessionFactory) -> None:
    await _create(sessions)
    async with unit_of_work(sessions) as session:
        await api_keys.revoke_key(session, "alice")

    with pytest.raises(Conflict, match="named 'alice' already exists"):
        await _create(sessions)


async def test_a_name_differing_only_in_case_is_a_conflict_naming_the_key(
    sessions: SessionFactory,
) -> None:
    await _create(sessions, "ops")

    with pytest.raises(Conflict) as refused:
        await _create(sessions, "OPS")

    assert refused.value.detail == (
        "an API key named 'ops' already exists, and 'OPS' differs from it only in case; "
        "choose another name (names are compared ignoring case, and revoked keys keep theirs)"
    )


async def test_a_revoked_keys_name_is_taken_in_every_case(sessions: SessionFactory) -> None:
    # Runs and decisions record a key by its name: `Ops` would read as the revoked `ops`.
    await _create(sessions, "ops")
    async with unit_of_work(sessions) as session:
        await api_keys.revoke_key(session, "ops")

    with pytest.raises(Conflict, match="named 'ops' already exists, and 'Ops' differs"):
        await _create(sessions, "Ops")


async def test_names_taken_in_two_cases_before_the_rule_are_kept_and_refuse_a_third(
    sessions: SessionFactory,
) -> None:
    # A database from before the rule may hold `ops` and `OPS`: both still work, and a new
    # name is refused naming the older of them.
    await _create(sessions, "ops")
    async with unit_of_work(sessions) as session:
        session.add(ApiKey(name="OPS", role=KeyRole.VIEWER, key_hash="0" * 64, key_prefix="crew_0"))

    with pytest.raises(Conflict, match="named 'ops' already exists, and 'oPs' differs"):
        await _create(sessions, "oPs")
    async with unit_of_work(sessions) as session:
        assert (await api_keys.revoke_key(session, "OPS")).name == "OPS"


@pytest.mark.parametrize("name", ["", "has space", "-dash-first", "x" * 101, "admin", "ADMIN"])
async def test_a_bad_or_reserved_name_is_refused(sessions: SessionFactory, name: str) -> None:
    with pytest.raises(Unprocessable):
        await _create(sessions, name)


async def test_an_active_key_is_found_by_its_secret(sessions: SessionFactory) -> None:
    created = await _create(sessions, role=KeyRole.ADMIN)

    found = await _find(sessions, created.secret)

    assert found == api_keys.ActiveKey(created.row.id, "alice", KeyRole.ADMIN, None)


@pytest.mark.parametrize("presented", ["", "test-key", "crew_short", "crew_" + "A" * 40])
async def test_an_unknown_secret_finds_nothing(sessions: SessionFactory, presented: str) -> None:
    await _create(sessions)

    assert await _find(sessions, presented) is None


async def test_a_revoked_key_is_not_found(sessions: SessionFactory) -> None:
    created = await _create(sessions)

    async with unit_of_work(sessions) as session:
        revoked = await api_keys.revoke_key(session, "alice")

    assert revoked.revoked_at is not None
    assert await _find(sessions, created.secret) is None


async def test_revoking_an_unknown_name_is_not_found(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        with pytest.raises(NotFound, match="no API key named 'carol'"):
            await api_keys.revoke_key(session, "carol")


async def test_revoking_twice_is_a_conflict(sessions: SessionFactory) -> None:
    await _create(sessions)
    async with unit_of_work(sessions) as session:
        await api_keys.revoke_key(session, "alice")

    async with unit_of_work(sessions) as session:
        with pytest.raises(Conflict, match="already revoked"):
            await api_keys.revoke_key(session, "alice")


async def test_keys_are_listed_oldest_first_revoked_ones_included(
    sessions: SessionFactory,
) -> None:
    for name in ("carol", "alice", "bob"):
        await _create(sessions, name)
    async with unit_of_work(sessions) as session:
        await api_keys.revoke_key(session, "alice")

    async with sessions() as session:
        rows = await api_keys.list_keys(session)

    assert [(row.name, row.revoked_at is not None) for row in rows] == [
        ("carol", False),
        ("alice", True),
        ("bob", False),
    ]


async def _record_use_at(sessions: SessionFactory, key: ApiKey, moment: datetime) -> None:
    async with sessions() as session:
        connection = await session.connection()
        await api_keys.record_use(connection, key.id, moment)
        await session.commit()


async def _last_use(sessions: SessionFactory, key: ApiKey) -> datetime | None:
    async with sessions() as session:
        return await session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key.id))


async def test_a_use_is_recorded_at_most_once_a_minute(sessions: SessionFactory) -> None:
    key = (await _create(sessions)).row
    first = utcnow().replace(microsecond=0)

    await _record_use_at(sessions, key, first)
    await _record_use_at(sessions, key, first + timedelta(seconds=59))
    assert await _last_use(sessions, key) == first

    await _record_use_at(sessions, key, first + timedelta(seconds=60))
    assert await _last_use(sessions, key) == first + timedelta(seconds=60)


@pytest.mark.parametrize(
    ("last_use_ago", "news"), [(None, True), (timedelta(seconds=59), False), (timedelta(60), True)]
)
def test_a_use_is_news_when_none_is_recorded_within_the_minute(
    last_use_ago: timedelta | None, news: bool
) -> None:
    now = utcnow()
    last_use = None if last_use_ago is None else now - last_use_ago
    key = api_keys.ActiveKey(uuid.uuid4(), "alice", KeyRole.VIEWER, last_use)

    assert api_keys.use_is_unrecorded(key, now) is news
