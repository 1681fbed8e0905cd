"""A node's panel: its agent, attempts, error, prompt, and its artifacts rendered with their
sidecar figures; and one artifact's text, for the gates inbox."""

import asyncio
import functools
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.console.rendering import MAX_RENDERED_BYTES, Rendered, render_artifact
from apps.core.errors import NotFound, ServiceUnavailable
from apps.orchestrator.infra.storage.base import ArtifactStore, store_io
from apps.orchestrator.model.models import Artifact, Node
from apps.orchestrator.reading import artifacts, nodes

# The sidecar's figures shown beside an artifact, in this order.
SIDECAR_FIGURES = ("provider", "model", "latency_ms", "cost")


@dataclass(frozen=True, slots=True)
class ArtifactText:
    """An artifact's bytes to show inline, or (`content` None) why they are not shown:
    `too_large` to inline, else `unreadable` says what the store answered."""

    content: bytes | None
    media_type: str
    too_large: bool = False
    unreadable: str = ""


async def artifact_text(
    connection: AsyncConnection,
    store: ArtifactStore,
    artifact_id: uuid.UUID,
    limit: int = MAX_RENDERED_BYTES,
) -> ArtifactText:
    """An artifact's bytes and media type, unless it is over `limit` bytes to show inline or
    its file is out of reach."""
    row = (
        await connection.execute(
            select(Artifact.storage_key, Artifact.media_type, Artifact.size).where(
                Artifact.id == artifact_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"artifact {artifact_id} not found")
    if row.size > limit:
        return ArtifactText(None, row.media_type, too_large=True)
    try:
        content = await store_io(store, row.size, functools.partial(store.read, row.storage_key))
    except (NotFound, ServiceUnavailable) as error:
        # One file out of reach (lost, or a store that is down) must not take the page with it:
        # the inbox's other gates still need deciding.
        return ArtifactText(None, row.media_type, unreadable=error.detail)
    return ArtifactText(content, row.media_type)


def _figures(sidecar: dict[str, Any]) -> list[tuple[str, str]]:
    shown = [(name, str(sidecar[name])) for name in SIDECAR_FIGURES if name in sidecar]
    usage = sidecar.get("usage")
    if isinstance(usage, dict):
        shown += [(name, str(value)) for name, value in usage.items()]
    return shown


async def rendered(found: ArtifactText) -> Rendered | None:
    """`found` rendered for a page, in a thread: markdown-it takes some 25 ms over 4 KB of plain
    prose and seconds over half a megabyte of LLM output, which on the event loop would stall
    every request, stream and the in-process worker meanwhile."""
    if found.content is None:
        return None
    return await asyncio.to_thread(render_artifact, found.content, found.media_type)


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
        text = await artifact_text(connection, store, artifact["id"])
        shown.append(
            artifact
            | {
                "figures": _figures(sidecar),
                "rendered": await rendered(text),
                "unreadable": text.unreadable,
                "sidecar_json": json.dumps(sidecar, indent=2, default=str),
            }
        )
    return {"node": node, "prompt": prompt or "", "artifacts": shown}
