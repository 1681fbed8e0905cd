"""Checks an operator runs against a deployment: a route that fails on purpose, to see that an
error reaches Sentry (the Operator Console document's "call a route that raises an exception")."""

from typing import Any

from fastapi import APIRouter

from apps.api.auth import AdminCaller, forbidden_below
from apps.api.responses import error_response
from apps.api.routing import ProtectedRoute
from apps.core.error_reporting import tag_request
from apps.orchestrator.model.models import KeyRole

router = APIRouter(tags=["checks"], route_class=ProtectedRoute)

# The tag to search for in Sentry: `crew_check:sentry`.
CHECK_TAG = {"crew_check": "sentry"}
_ALWAYS_FAILS: dict[int | str, dict[str, Any]] = {
    **forbidden_below(KeyRole.ADMIN),
    500: error_response(
        500,
        "Always, on purpose: the error is reported to Sentry (SENTRY_DSN), tagged "
        "crew_check:sentry with the request id and the caller's key name.",
        example={"detail": "internal server error"},
    ),
}


class SentryCheckError(RuntimeError):
    """Raised on purpose by `GET /sentry-debug`: not a fault of the service."""


@router.get("/sentry-debug", responses=_ALWAYS_FAILS, response_model=None)
async def check_sentry(caller: AdminCaller) -> None:
    """Fail on purpose with a 500, so that an operator sees an error arrive in Sentry, tagged
    `crew_check:sentry`. Needs an admin key."""
    tag_request(CHECK_TAG | {"key_name": caller.name})
    raise SentryCheckError(f"Sentry check: an error raised on purpose for {caller.name!r}")
