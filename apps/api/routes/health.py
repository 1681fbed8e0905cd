"""Liveness and database reachability, for load balancers and orchestrators; no key needed."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from apps.api.responses import errors
from apps.core.database import check_database
from apps.wire.schemas import Health

router = APIRouter(tags=["health"])

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    # X-Timezone is read on every route, this one included.
    **errors(400, 422),
    503: {"model": Health, "description": "The database cannot be reached."},
}


# HEAD too: uptime monitors (UptimeRobot's by default) and some load balancers ask with it.
@router.get("/health", response_model=Health, responses=_UNAVAILABLE)
@router.head("/health", response_model=Health, responses=_UNAVAILABLE)
@router.get("/healthz", response_model=Health, responses=_UNAVAILABLE, include_in_schema=False)
@router.head("/healthz", response_model=Health, responses=_UNAVAILABLE, include_in_schema=False)
async def get_health(request: Request) -> Health | JSONResponse:
    """Whether the service is up and its database answers (`HEAD`: the status alone)."""
    problem = await check_database(request.app.state.engine)
    if problem is None:
        return Health(status="ok", database="ok")
    unavailable = Health(status="unavailable", database=problem).model_dump()
    # As every 503 of a database out of reach says when to ask again.
    return JSONResponse(unavailable, 503, headers={"Retry-After": "1"})
