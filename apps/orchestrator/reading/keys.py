"""API keys as admins list them: oldest first, revoked ones included, a page at a time."""

from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.core.errors import NotFound
from apps.orchestrator.model.models import ApiKey
from apps.orchestrator.reading.pagination import Keyset, Page, as_dicts

_KEY_COLUMNS = (
    ApiKey.id,
    ApiKey.name,
    ApiKey.role,
    ApiKey.key_prefix,
    ApiKey.created_at,
    ApiKey.last_used_at,
    ApiKey.revoked_at,
)
_KEYS = cast(Table, ApiKey.__table__).c
KEY_ORDER = Keyset("keys", _KEYS.created_at, _KEYS.id)


async def list_keys(
    connection: AsyncConnection, *, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    """Every key, revoked ones included, oldest first; never a secret or its hash."""
    statement, parameters = KEY_ORDER.bounds(select(*_KEY_COLUMNS), limit, cursor)
    return KEY_ORDER.page(as_dicts(await connection.execute(statement, parameters)), limit)


async def get_key(connection: AsyncConnection, name: str) -> dict[str, Any]:
    """The key named `name`, or `NotFound`."""
    rows = as_dicts(await connection.execute(select(*_KEY_COLUMNS).where(ApiKey.name == name)))
    if not rows:
        raise NotFound(f"no API key named {name!r}")
    return rows[0]
