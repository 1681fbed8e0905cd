"""Nodes: a run's plan in order, and one node."""

import uuid

from fastapi import APIRouter

from apps.api.dependencies import Cursor, Limit, ReadConnection
from apps.api.responses import errors
from apps.api.routing import ProtectedRoute
from apps.orchestrator.reading import nodes
from apps.orchestrator.reading.pagination import DEFAULT_LIMIT
from apps.wire.schemas import Node, Page

router = APIRouter(tags=["nodes"], route_class=ProtectedRoute)


@router.get("/runs/{run_id}/nodes", responses=errors(404))
async def list_run_nodes(
    connection: ReadConnection,
    run_id: uuid.UUID,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[Node]:
    """A run's nodes in plan order, each with the keys of the nodes it depends on."""
    page = await nodes.list_nodes(connection, run_id, limit, cursor)
    return Page[Node].model_validate({"items": page.items, "next_cursor": page.next_cursor})


@router.get("/nodes/{node_id}", responses=errors(404))
async def get_node(connection: ReadConnection, node_id: uuid.UUID) -> Node:
    """One node."""
    return Node.model_validate(await nodes.get_node(connection, node_id))
