"""Who is calling: an API key from `X-API-Key` or `Authorization: Bearer`, compared in constant
time."""

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from apps.core.errors import Unauthorized
from apps.core.settings import Settings
from apps.orchestrator.models import KeyRole

ENV_KEY_NAME = "admin"

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key, e.g. the API_KEY setting."
)
_bearer = HTTPBearer(auto_error=False, description="An API key sent as a bearer token.")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a key stands for: its name is what decisions and runs are recorded under."""

    name: str
    role: KeyRole


def principal_for_key(presented: str, settings: Settings) -> Principal | None:
    """The principal of `presented`, or None when no key matches."""
    if settings.api_key is not None and hmac.compare_digest(
        presented.encode(), settings.api_key.get_secret_value().encode()
    ):
        return Principal(name=ENV_KEY_NAME, role=KeyRole.ADMIN)
    return None


async def authenticate(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The caller's principal, or 401 when the key is missing or unknown."""
    presented = api_key or (bearer.credentials if bearer else None)
    if not presented:
        raise Unauthorized("missing API key: send X-API-Key or Authorization: Bearer")
    principal = principal_for_key(presented, request.app.state.settings)
    if principal is None:
        raise Unauthorized("invalid API key")
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(authenticate)]
