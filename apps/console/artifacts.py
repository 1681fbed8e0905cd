"""A node's panel: its agent, attempts, error, prompt, and its artifacts rendered with their
sidecar figures; and one artifact's text, for the gates inbox."""

import functools
import json
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.console.rendering import MAX_RENDERED_BYTES, Rendered, render_artifact
from apps.core.errors import NotFound
from apps.orchestrator.infra.storage.base import ArtifactStore, store_io
from apps.orchestrator.model.models import Artifact, Node
from apps.orchestrator.reading import artifacts, nodes

# The sidecar's figures shown beside an artifact, in this order.
SIDECAR_FIGURES = ("provider", "model", "latency_ms", "cost")


async def artifact_text(
    connection: AsyncConnection, store: ArtifactStore, artifact_id: uuid.UUID
) -> tuple[bytes, str] | None:
    """An artifact's bytes and media type, or None when it is too big to show inline."""
    row = (
        await connection.execute(
            select(Artifact.storage_key, Artifact.media_type, Artifact.size).where(
                Artifact.id == artifact_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"artifact {artifact_id} not found")
    if row.size > MAX_RENDERED_BYTES:
        return None
    content = await store_io(store, row.size, functools.partial(store.read, row.storage_key))
    return content, row.media_type


def _figures(sidecar: dict[str, Any]) -> list[tuple[str, str]]:
    shown = [(name, str(sidecar[name])) for name in SIDECAR_FIGURES if name in sidecar]
    usage = sidecar.get("usage")
    if isinstance(usage, dict):
        shown += [(name, str(value)) for name, value in usage.items()]
    return shown


async def _rendered(
    connection: AsyncConnection, store: ArtifactStore, artifact: dict[str, Any]
) -> Rendered | None:
    found = await artifact_text(connection, store, artifact["id"])
    return None if found is None else render_artifact(*found)


async def node_panel(
    connection: AsyncConnection,
    store: ArtifactStore,
    node_id: uuid.UUID,
    run_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """What the panel of `node_id` shows; `NotFound` when it is not a node of `run_id`."""
    node = await nodes.get_node(connection, node_id)
    if run_id is not None and node["run_id"] != run_id:
        raise NotFound(f"node {node_id} is not in run {run_id}")
    prompt = await connection.scalar(select(Node.prompt).where(Node.id == node_id))
    found = await artifacts.list_artifacts(
        connection, run_id=None, node_id=node_id, limit=20, cursor=None
    )
    shown = []
    for artifact in found.items:
        sidecar = artifact["sidecar"]
        sidecar = json.loads(sidecar) if isinstance(sidecar, str) else sidecar or {}
        shown.append(
            artifact
            | {
                "figures": _figures(sidecar),
                "rendered": await _rendered(connection, store, artifact),
                "sidecar_json": json.dumps(sidecar, indent=2, default=str),
            }
        )
    return {"node": node, "prompt": prompt or "", "artifacts": shown}
