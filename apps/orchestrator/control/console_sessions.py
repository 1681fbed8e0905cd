"""Console sessions: a browser signs in with a key and gets a session token for its cookie.

Only the token's SHA-256 is stored (the token is 256 random bits: a plain hash is enough). A
session is found by one lookup that joins its key unrevoked, so revoking a key ends its sessions
at their next request; a session of the API_KEY setting keeps the setting's hash and ends when
the setting changes. Sessions expire; expired rows are swept at the next sign-in.
"""

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.orchestrator.model.models import ApiKey, ConsoleSession, KeyRole, utcnow


@dataclass(frozen=True, slots=True)
class SessionOwner:
    """Who a session acts as: a stored key (`key_id`), or the API_KEY setting (`key_id` None)."""

    name: str
    role: KeyRole
    key_id: uuid.UUID | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(
    connection: AsyncConnection,
    owner: SessionOwner,
    lifetime: timedelta,
    settings_key_hash: str | None = None,
) -> str:
    """Store a new session for `owner`, expiring after `lifetime`; its token, shown once."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    await connection.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    await connection.execute(
        insert(ConsoleSession).values(
            id=uuid.uuid4(),
            token_hash=hash_token(token),
            key_id=owner.key_id,
            key_name=owner.name,
            role=owner.role,
            settings_key_hash=settings_key_hash,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


# A stored key's session needs the key unrevoked; the setting's session needs no key row.
_FIND = (
    select(
        ConsoleSession.key_name,
        ConsoleSession.role,
        ConsoleSession.key_id,
        ConsoleSession.settings_key_hash,
        ApiKey.revoked_at,
    )
    .outerjoin(ApiKey, ApiKey.id == ConsoleSession.key_id)
    .where(
        ConsoleSession.token_hash == bindparam("token_hash"),
        ConsoleSession.expires_at > bindparam("now"),
    )
)


async def find_session(
    connection: AsyncConnection, token: str, settings_key_hash: str | None, now: datetime
) -> SessionOwner | None:
    """The owner of the live session `token`, or None when it is unknown, expired, or its key
    was revoked (or, for the API_KEY setting's session, the setting changed)."""
    row = (
        await connection.execute(_FIND, {"token_hash": hash_token(token), "now": now})
    ).one_or_none()
    if row is None:
        return None
    name, role, key_id, stored_setting, revoked_at = row
    if key_id is None:
        if stored_setting is None or stored_setting != settings_key_hash:
            return None
    elif revoked_at is not None:
        return None
    return SessionOwner(name=name, role=role, key_id=key_id)


async def end_session(connection: AsyncConnection, token: str) -> None:
    """Forget the session `token` (signing out); nothing when it is unknown."""
    await connection.execute(
        delete(ConsoleSession).where(ConsoleSession.token_hash == hash_token(token))
    )
