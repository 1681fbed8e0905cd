"""Who is calling, and whether their role may do what they ask.

A key comes in `X-API-Key` or `Authorization: Bearer`; without one, the web console's session
cookie stands for the key it signed in with (`apps.console.sessions`). The `API_KEY` setting is
the admin key named "admin", compared in constant time with no database access; any other key is
looked up by its hash on every request, so a revocation holds from the next request on. Routes
state the role they need with one of the annotated dependencies at the bottom of this module.
"""

import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.api.responses import errors
from apps.console import sessions as console_sessions
from apps.core.errors import Forbidden, Unauthorized
from apps.core.settings import Settings
from apps.orchestrator.control import api_keys
from apps.orchestrator.control.api_keys import ADMIN_TOKEN_NAME, ENV_KEY_NAME
from apps.orchestrator.model.models import KeyRole, utcnow

logger = logging.getLogger(__name__)

ROLES_DESCRIPTION = """\
Every route needs an API key, sent as `X-API-Key: <key>` or `Authorization: Bearer <key>`, but
`/health`, `/healthz`, `/metrics` (when METRICS_ENABLED is on) and this reference (unless
API_DOCS_ENABLED is off): a missing, unknown or revoked key is a 401. Each key has a role:

- `viewer`: every read (`GET`).
- `operator`: what a viewer may, plus submitting tasks, deciding gates, cancelling and resuming
  runs, and validating configuration.
- `admin`: everything. The `API_KEY` setting is an admin key named `admin`; the Operator
  Console's `ADMIN_TOKEN` (the variable `security.admin_token_env` of `conf/operator.yaml`
  names) is another, named `admin-token`.

A key whose role may not do what it asks gets a 403 naming the role needed. Keys are created,
listed and revoked with `python -m apps.api.keys`.
"""

_RANK = {KeyRole.VIEWER: 0, KeyRole.OPERATOR: 1, KeyRole.ADMIN: 2}

_api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An API key: the API_KEY setting, or one made by `python -m apps.api.keys`.",
)
_bearer = HTTPBearer(auto_error=False, description="An API key sent as a bearer token.")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a key stands for: its name is what decisions and runs are recorded under."""

    name: str
    role: KeyRole
    # The stored key's id, by which what it opened (event streams) ends when it is revoked;
    # None for the API_KEY setting, which lasts as long as the process.
    key_id: uuid.UUID | None = None

    def may_act_as(self, needed: KeyRole) -> bool:
        return _RANK[self.role] >= _RANK[needed]


def settings_principal(presented: str, settings: Settings) -> Principal | None:
    """The admin principal when `presented` is the API_KEY setting (named `admin`) or the admin
    token of the Operator Console (ADMIN_TOKEN or the variable ADMIN_TOKEN_ENV names, named
    `admin-token`), else None. Both may be set; each is compared in constant time."""
    for name, key in ((ENV_KEY_NAME, settings.api_key), (ADMIN_TOKEN_NAME, settings.admin_token)):
        if key is not None and hmac.compare_digest(
            presented.encode(), key.get_secret_value().encode()
        ):
            return Principal(name=name, role=KeyRole.ADMIN)
    return None


async def _stored_principal(request: Request, presented: str) -> Principal | None:
    # Through the read engine: on PostgreSQL the lookup is then one round trip, and the use
    # record (at most once a LAST_USE_PRECISION) commits by itself.
    async with request.app.state.read_engine.connect() as connection:
        key = await api_keys.find_active_key(connection, presented)
        if key is None:
            return None
        now = utcnow()
        if api_keys.use_is_unrecorded(key, now):
            await _record_use(connection, key, now)
    return Principal(name=key.name, role=key.role, key_id=key.id)


async def _record_use(connection: AsyncConnection, key: api_keys.ActiveKey, now: datetime) -> None:
    # Bookkeeping, not access control: a busy database must not turn a good request into a 500.
    try:
        await api_keys.record_use(connection, key.id, now)
        await connection.commit()
    except SQLAlchemyError as error:
        logger.warning("could not record the use of API key %r: %s", key.name, error)


async def _console_principal(request: Request) -> Principal | None:
    """The principal of the console's session cookie, when there is no key: the console's pages
    call these routes as the key they signed in with (its key_id ends their streams too)."""
    owner = await console_sessions.signed_in(request)
    if owner is None:
        return None
    console_sessions.check_not_forged(request)
    return Principal(name=owner.name, role=owner.role, key_id=owner.key_id)


async def authenticate(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The caller's principal, or 401 when the key is missing, unknown or revoked."""
    checked: Principal | None = getattr(request.state, "principal", None)
    if checked is not None:  # by the route, before it read the body
        return checked
    # Whitespace around a header's value is not part of it (RFC 9110, 5.5); not every server
    # takes it off the way Starlette does for `Authorization`.
    presented = (api_key or (bearer.credentials if bearer else "")).strip()
    if not presented:
        principal = await _console_principal(request)
        if principal is None:
            raise Unauthorized("missing API key: send X-API-Key or Authorization: Bearer")
        request.state.principal = principal
        return principal
    principal = settings_principal(presented, request.app.state.settings)
    if principal is None:
        principal = await _stored_principal(request, presented)
    if principal is None:
        raise Unauthorized("invalid API key")
    request.state.principal = principal
    return principal


async def authenticate_request(request: Request) -> Principal:
    """`authenticate` from the request's headers alone, for a route to call before it reads its
    body."""
    return await authenticate(request, await _api_key_header(request), await _bearer(request))


def _roles_from(needed: KeyRole) -> str:
    return " or ".join(role for role in KeyRole if _RANK[role] >= _RANK[needed])


def require_role(needed: KeyRole) -> Callable[..., Awaitable[Principal]]:
    """A dependency answering the caller's principal, or 403 when its role is below `needed`."""

    async def caller_with_role(caller: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not caller.may_act_as(needed):
            raise Forbidden(
                f"this needs the {_roles_from(needed)} role; "
                f"the key {caller.name!r} has the {caller.role} role"
            )
        return caller

    # What lets a route check the role before it reads the body (`routing.ProtectedRoute`).
    caller_with_role.needed_role = needed  # type: ignore[attr-defined]
    return caller_with_role


def forbidden_below(needed: KeyRole) -> dict[int | str, dict[str, Any]]:
    """The 403 of a route that needs `needed`, for its `responses=` in the OpenAPI page."""
    return errors(
        403, described={403: f"The key's role may not do this: it needs {_roles_from(needed)}."}
    )


# What routes declare. Every key may read; writes name the role they need.
Caller = Annotated[Principal, Depends(authenticate)]
OperatorCaller = Annotated[Principal, Depends(require_role(KeyRole.OPERATOR))]
AdminCaller = Annotated[Principal, Depends(require_role(KeyRole.ADMIN))]
