"""The operator's inbox: gates across runs, oldest first."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from apps.api.dependencies import Cursor, Limit, ReadConnection
from apps.api.routing import ProtectedRoute
from apps.orchestrator.model.states import GateStatus
from apps.orchestrator.reading import gates
from apps.orchestrator.reading.pagination import DEFAULT_LIMIT
from apps.wire.schemas import Gate, Page

router = APIRouter(tags=["gates"], route_class=ProtectedRoute)


@router.get("/gates")
async def list_gates(
    connection: ReadConnection,
    status: Annotated[
        GateStatus | None, Query(description="Only gates in this status, e.g. pending.")
    ] = None,
    run_id: Annotated[uuid.UUID | None, Query(description="Only this run's gates.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[Gate]:
    """Gates oldest first, with their run's title, node and the artifact waiting for review."""
    page = await gates.list_gates(
        connection, status=status, run_id=run_id, limit=limit, cursor=cursor
    )
    return Page[Gate].model_validate({"items": page.items, "next_cursor": page.next_cursor})
