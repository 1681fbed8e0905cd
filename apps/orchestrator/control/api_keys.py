"""API keys with roles: created (the secret shown once), listed, revoked, and found by secret.

Only a key's SHA-256 is stored. The secrets are 238 random bits, so a plain hash is enough: a
slow password hash would only add work to every request. A key's last use is written at most once
per `LAST_USE_PRECISION`, so reads do not turn into writes.
"""

import hashlib
import re
import secrets
import string
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from apps.core.errors import Conflict, NotFound, Unprocessable
from apps.orchestrator.model.models import ApiKey, KeyRole, utcnow

KEY_PREFIX = "crew_"
# The name decisions and runs record for the API_KEY setting's admin key, which is not stored.
ENV_KEY_NAME = "admin"
# The name of the Operator Console's ADMIN_TOKEN (the setting admin_token), not stored either.
ADMIN_TOKEN_NAME = "admin-token"
# The name decisions record as who decided a gate that timed out: no key may pass for it.
TIMEOUT_DECIDER = "timeout"
LAST_USE_PRECISION = timedelta(minutes=1)

_SECRET_ALPHABET = string.ascii_letters + string.digits
_SECRET_LENGTH = 40
_KEY_LENGTH = len(KEY_PREFIX) + _SECRET_LENGTH
_SHOWN_PREFIX_LENGTH = 12
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key's row and its secret, which exists nowhere else once this is dropped."""

    row: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """What a request needs of an unrevoked key."""

    id: uuid.UUID
    name: str
    role: KeyRole
    last_used_at: datetime | None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    # Letters and digits only: a key selects with one double-click and needs no URL quoting.
    return KEY_PREFIX + "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(_SECRET_LENGTH))


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise Unprocessable(
            f"invalid key name {name!r}: use 1 to 100 letters, digits, '.', '_', '-' or '@', "
            "starting with a letter or digit"
        )
    if name.casefold() in (ENV_KEY_NAME, ADMIN_TOKEN_NAME):
        raise Unprocessable(f"the name {name!r} is kept for an admin key of the settings")
    if name.casefold() == TIMEOUT_DECIDER:
        raise Unprocessable(f"the name {name!r} is kept for the decisions of gates that time out")


async def create_key(session: AsyncSession, name: str, role: KeyRole) -> CreatedKey:
    """Add a key named `name` with `role`; its secret is in the answer and nowhere else.

    A name is taken by any key, revoked ones included, whose name differs from it only in case:
    keys are addressed by name and runs and decisions record theirs, so `OPS` beside `ops` would
    be taken for it (revoking one when the other was meant).
    """
    _check_name(name)
    await _lock_key_names(session)
    holder = await session.scalar(
        select(ApiKey)
        .where(func.lower(ApiKey.name) == name.lower())
        .order_by(ApiKey.created_at, ApiKey.name)
        .limit(1)
    )
    if holder is not None:
        raise _name_taken(name, holder.name)
    secret = _new_secret()
    row = ApiKey(
        name=name, role=role, key_hash=hash_key(secret), key_prefix=secret[:_SHOWN_PREFIX_LENGTH]
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise _name_taken(name, name) from None  # added without the lock, a moment ago
    return CreatedKey(row=row, secret=secret)


async def _lock_key_names(session: AsyncSession) -> None:
    """Until the transaction ends, no other one adds a key: two creations of `ops` and `OPS` at
    once take turns, and the second sees the first's key.

    On PostgreSQL, SHARE ROW EXCLUSIVE: it conflicts with itself and with every write to the
    table, and waits for those in progress; reads (a request's key lookup) go on. On SQLite a
    unit of work holds the database's one write lock from its BEGIN IMMEDIATE: no statement.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text(f"LOCK TABLE {ApiKey.__tablename__} IN SHARE ROW EXCLUSIVE MODE")
        )


def _name_taken(name: str, holder: str) -> Conflict:
    if holder == name:
        return Conflict(
            f"an API key named {name!r} already exists (revoked keys keep their names); "
            "choose another name"
        )
    return Conflict(
        f"an API key named {holder!r} already exists, and {name!r} differs from it only in "
        "case; choose another name (names are compared ignoring case, and revoked keys keep "
        "theirs)"
    )


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    rows = await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.name))
    return list(rows)


async def revoke_key(session: AsyncSession, name: str, *, keep_an_admin: bool = False) -> ApiKey:
    """Revoke the key named `name`: from its next request on, it is refused.

    With `keep_an_admin` (for callers who need an admin key to undo it), the last unrevoked
    admin key is not revoked: a Conflict instead.
    """
    admins = await _lock_active_admins(session) if keep_an_admin else None
    row = await session.scalar(select(ApiKey).where(ApiKey.name == name).with_for_update())
    if row is None:
        raise NotFound(f"no API key named {name!r}")
    if row.revoked_at is not None:
        raise Conflict(
            f"the API key {name!r} was already revoked at {row.revoked_at:%Y-%m-%dT%H:%M:%SZ}"
        )
    if admins is not None and admins == [row.id]:
        raise Conflict(
            f"the API key {name!r} is the last admin key: create another admin key first, "
            "or set API_KEY"
        )
    row.revoked_at = utcnow()
    await session.flush()
    return row


async def _lock_active_admins(session: AsyncSession) -> list[uuid.UUID]:
    """The unrevoked admin keys' ids, locked in id order until the transaction ends.

    Two admins revoking each other at once then take turns, and the second sees the first's
    revocation: without it, each saw the other's key still active and both were revoked. Locked
    before the key to revoke, so that no two revocations lock the same rows in two orders.
    """
    ids = await session.scalars(
        select(ApiKey.id)
        .where(ApiKey.role == KeyRole.ADMIN, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.id)
        .with_for_update()
    )
    return list(ids)


# Built once with its parameter bound at execution: building the statement per request cost as
# much as running it.
_FIND_ACTIVE = select(ApiKey.id, ApiKey.name, ApiKey.role, ApiKey.last_used_at).where(
    ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None)
)


async def find_active_key(connection: AsyncConnection, secret: str) -> ActiveKey | None:
    """The unrevoked key whose secret is `secret`, by one lookup on the unique hash; or None."""
    if len(secret) != _KEY_LENGTH or not secret.startswith(KEY_PREFIX):
        return None  # not one of ours: no query for it
    result = await connection.execute(_FIND_ACTIVE, {"key_hash": hash_key(secret)})
    row = result.one_or_none()
    return None if row is None else ActiveKey(*row)


def use_is_unrecorded(key: ActiveKey, now: datetime) -> bool:
    """Whether a use of `key` at `now` is news: none is recorded within the precision."""
    return key.last_used_at is None or now - key.last_used_at >= LAST_USE_PRECISION


async def record_use(connection: AsyncConnection, key_id: uuid.UUID, now: datetime) -> None:
    """Set the key's last use to `now` unless another request recorded one within the precision."""
    await connection.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            ApiKey.last_used_at.is_(None) | (ApiKey.last_used_at <= now - LAST_USE_PRECISION),
        )
        .values(last_used_at=now)
    )


async def revoked_among(
    connection: AsyncConnection, key_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of `key_ids` that are revoked (or no longer exist), in one query."""
    active = await connection.scalars(
        select(ApiKey.id).where(ApiKey.id.in_(key_ids), ApiKey.revoked_at.is_(None))
    )
    return set(key_ids) - set(active)
