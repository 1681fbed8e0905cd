"""Reading nodes: a run's nodes in plan order, with the keys of the nodes each depends on."""

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.core.errors import NotFound
from apps.orchestrator.model.models import NODES, Node, NodeDependency
from apps.orchestrator.reading.pagination import Keyset, Page, as_dicts
from apps.orchestrator.reading.runs import require_run

# In plan order, within one run: its cursors name the run.
NODE_ORDER = Keyset("nodes", NODES.c.position)

NODE_COLUMNS = (
    Node.id,
    Node.run_id,
    Node.key,
    Node.position,
    Node.role,
    Node.status,
    Node.attempt,
    Node.max_attempts,
    Node.timeout_seconds,
    Node.provider,
    Node.model,
    Node.gate,
    Node.error,
    Node.created_at,
    Node.updated_at,
    Node.started_at,
    Node.finished_at,
)


async def _with_deps(
    connection: AsyncConnection,
    statement: Select[*tuple[Any, ...]],
    parameters: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    nodes = as_dicts(await connection.execute(statement, parameters))
    if not nodes:
        return nodes
    upstream = NODES.alias("upstream")
    edges = await connection.execute(
        select(NodeDependency.node_id, upstream.c.key)
        .join(upstream, upstream.c.id == NodeDependency.depends_on_id)
        .where(NodeDependency.node_id.in_([node["id"] for node in nodes]))
        .order_by(upstream.c.position)
    )
    deps: dict[uuid.UUID, list[str]] = defaultdict(list)
    for node_id, key in edges:
        deps[node_id].append(key)
    for node in nodes:
        node["deps"] = deps[node["id"]]
    return nodes


async def list_nodes(
    connection: AsyncConnection, run_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    """A run's nodes in plan order, or `NotFound` for an unknown run."""
    await require_run(connection, run_id)
    statement = select(*NODE_COLUMNS).where(Node.run_id == run_id)
    statement, parameters = NODE_ORDER.bounds(statement, limit, cursor, scope=run_id.hex)
    nodes = await _with_deps(connection, statement, parameters)
    return NODE_ORDER.page(nodes, limit, scope=run_id.hex)


async def get_node(connection: AsyncConnection, node_id: uuid.UUID) -> dict[str, Any]:
    """One node with its dependencies' keys, or `NotFound`."""
    nodes = await _with_deps(connection, select(*NODE_COLUMNS).where(Node.id == node_id))
    if not nodes:
        raise NotFound(f"node {node_id} not found")
    return nodes[0]
