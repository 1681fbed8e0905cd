"""The gates inbox: every waiting gate across runs, oldest first, with the artifact to review."""

from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from apps.console.artifacts import artifact_text, rendered
from apps.console.web import PAGE_METHODS, Viewer, console_router, page
from apps.orchestrator.model.states import GateStatus
from apps.orchestrator.reading import gates
from apps.orchestrator.reading.pagination import MAX_LIMIT

router = console_router()


async def _with_artifact(
    request: Request, connection: AsyncConnection, gate: dict[str, Any]
) -> dict[str, Any]:
    shown: dict[str, Any] = {"text": None, "rendered": None, "unreadable": ""}
    if gate["artifact_id"] is not None:
        found = await artifact_text(
            connection, request.app.state.artifact_store, gate["artifact_id"]
        )
        shown = {
            "text": None if found.content is None else found.content.decode(errors="replace"),
            "rendered": await rendered(found),
            "unreadable": found.unreadable,
        }
    return gate | shown


@router.api_route("/gates", methods=PAGE_METHODS)
async def gates_page(request: Request, owner: Viewer) -> Response:
    """Waiting gates, oldest first: approve, approve with an edit, or reject (j/k/a/r)."""
    async with request.app.state.engine.connect() as connection:
        found = await gates.list_gates(
            connection, status=GateStatus.PENDING, run_id=None, limit=MAX_LIMIT, cursor=None
        )
        waiting = [await _with_artifact(request, connection, gate) for gate in found.items]
    return page(request, "gates.html", owner, gates=waiting, more=found.next_cursor is not None)
