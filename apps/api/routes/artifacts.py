"""Artifacts: metadata with sidecars, and the files themselves."""

import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response, StreamingResponse

from apps.api.dependencies import ArtifactStore, Cursor, Limit, ReadConnection
from apps.api.responses import errors
from apps.api.routing import ProtectedRoute
from apps.orchestrator.infra.storage.base import StoredFile
from apps.orchestrator.reading import artifacts
from apps.orchestrator.reading.pagination import DEFAULT_LIMIT
from apps.wire.schemas import Artifact, Page

router = APIRouter(tags=["artifacts"], route_class=ProtectedRoute)

_CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"*/*": {}}, "description": "The artifact's file."},
    **errors(
        404,
        503,
        described={
            404: "No such artifact, or its content is not in the artifact store.",
            503: "The database or the artifact store failed to answer.",
        },
    ),
}
_NOT_FOUND = errors(404)
# An artifact is what a model wrote, served from the console's origin to an operator signed in
# to it: never sniffed into HTML, and, should one be HTML or SVG, shown without its scripts and
# in an origin of its own.
_UNTRUSTED_FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
}


@router.get("/artifacts", responses=errors(404, described={404: "No run by that `run_id`."}))
async def list_artifacts(
    connection: ReadConnection,
    run_id: Annotated[uuid.UUID | None, Query(description="Only this run's artifacts.")] = None,
    node_id: Annotated[uuid.UUID | None, Query(description="Only this node's artifacts.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[Artifact]:
    """Artifacts in the order they were written; their sidecars without `prompts`, which
    `GET /artifacts/{artifact_id}` has."""
    page = await artifacts.list_artifacts(
        connection, run_id=run_id, node_id=node_id, limit=limit, cursor=cursor
    )
    return Page[Artifact].model_validate({"items": page.items, "next_cursor": page.next_cursor})


@router.get("/runs/{run_id}/artifacts", responses=_NOT_FOUND)
async def list_run_artifacts(
    connection: ReadConnection,
    run_id: uuid.UUID,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[Artifact]:
    """A run's artifacts in the order they were written; their sidecars without `prompts`, which
    `GET /artifacts/{artifact_id}` has."""
    return await list_artifacts(connection, run_id=run_id, limit=limit, cursor=cursor)


@router.get("/artifacts/{artifact_id}", responses=_NOT_FOUND)
async def get_artifact(connection: ReadConnection, artifact_id: uuid.UUID) -> Artifact:
    """One artifact's metadata and whole sidecar, its prompts included."""
    return Artifact.model_validate(await artifacts.get_artifact(connection, artifact_id))


@router.get(
    "/artifacts/{artifact_id}/content", response_class=Response, responses=_CONTENT_RESPONSES
)
async def get_artifact_content(
    connection: ReadConnection, store: ArtifactStore, artifact_id: uuid.UUID
) -> Response:
    """The artifact's file, with its media type, streamed from the artifact store; with a
    Content-Security-Policy that runs none of its scripts."""
    content = await artifacts.get_artifact_content(connection, store, artifact_id)
    stored = content.stored
    if isinstance(stored, StoredFile):
        return FileResponse(
            stored.path,
            media_type=content.media_type,
            filename=content.name,
            content_disposition_type="inline",
            headers=_UNTRUSTED_FILE_HEADERS,
        )
    headers = {
        "content-length": str(stored.size),
        "content-disposition": _inline(content.name),
        **_UNTRUSTED_FILE_HEADERS,
    }
    if stored.etag:
        headers["etag"] = stored.etag
    return StreamingResponse(stored.chunks, media_type=content.media_type, headers=headers)


def _inline(filename: str) -> str:
    """Content-Disposition showing the file in place, under its name (as FileResponse says it)."""
    quoted = quote(filename)
    if quoted != filename:
        return f"inline; filename*=utf-8''{quoted}"
    return f'inline; filename="{filename}"'
