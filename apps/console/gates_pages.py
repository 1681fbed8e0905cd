"""The gates inbox: every waiting gate across runs, oldest first, with the artifact to review."""

from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from apps.console.artifacts import artifact_text, rendered
from apps.console.rendering import MAX_RENDERED_BYTES
from apps.console.web import PAGE_METHODS, Viewer, console_router, page
from apps.orchestrator.model.states import GateStatus
from apps.orchestrator.reading import gates
from apps.orchestrator.reading.pagination import MAX_LIMIT

router = console_router()


# What the inbox shows of its gates' artifacts at most, together: 200 gates of half a megabyte
# each would be a page of 200 MB, rendered and sent at every visit. Past it, a gate links to
# its artifact in its run.
INBOX_SHOWN_BYTES = 4 * 1024 * 1024


async def _with_artifact(
    request: Request, connection: AsyncConnection, gate: dict[str, Any], limit: int
) -> dict[str, Any]:
    shown: dict[str, Any] = {"text": None, "rendered": None, "unreadable": ""}
    if gate["artifact_id"] is not None:
        found = await artifact_text(
            connection, request.app.state.artifact_store, gate["artifact_id"], limit
        )
        shown = {
            "text": None if found.content is None else found.content.decode(errors="replace"),
            "rendered": await rendered(found),
            "unreadable": found.unreadable,
            "shown_bytes": len(found.content or b""),
        }
    return gate | shown


@router.api_route("/gates", methods=PAGE_METHODS)
async def gates_page(request: Request, owner: Viewer) -> Response:
    """Waiting gates, oldest first: approve, approve with an edit, or reject (j/k/a/r)."""
    async with request.app.state.engine.connect() as connection:
        found = await gates.list_gates(
            connection, status=GateStatus.PENDING, run_id=None, limit=MAX_LIMIT, cursor=None
        )
        waiting = []
        left = INBOX_SHOWN_BYTES
        for gate in found.items:
            limit = min(MAX_RENDERED_BYTES, left)
            waiting.append(shown := await _with_artifact(request, connection, gate, limit))
            left -= shown.get("shown_bytes", 0)
    return page(request, "gates.html", owner, gates=waiting, more=found.next_cursor is not None)
