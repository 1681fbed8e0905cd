"""The operator's inbox: gates across runs, oldest first, each with its run's title and its node's
key; and the same rows for a decision to read inside its transaction."""

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from apps.orchestrator.model.models import GATES, Node, Run
from apps.orchestrator.model.states import GateStatus
from apps.orchestrator.reading.pagination import Keyset, Page, as_dicts

GATE_COLUMNS = (
    GATES.c.id,
    GATES.c.run_id,
    Run.title.label("run_title"),
    GATES.c.node_id,
    Node.key.label("node_key"),
    GATES.c.artifact_id,
    GATES.c.status,
    GATES.c.when,
    GATES.c.on_timeout,
    GATES.c.opened_at,
    GATES.c.expires_at,
    GATES.c.decided_at,
    GATES.c.decided_by,
    GATES.c.automatic,
    GATES.c.action,
    GATES.c.notes,
)


def _gates() -> Any:
    return (
        select(*GATE_COLUMNS)
        .join(Run, Run.id == GATES.c.run_id)
        .join(Node, Node.id == GATES.c.node_id)
    )


# Oldest first: the gate waiting longest is the first an operator sees.
GATE_ORDER = Keyset("gates", GATES.c.opened_at, GATES.c.id)


async def list_gates(
    connection: AsyncConnection,
    *,
    status: GateStatus | None,
    run_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> Page[dict[str, Any]]:
    """Gates oldest first, in `status` and of `run_id` when given: the operator's inbox."""
    statement = _gates()
    if status is not None:
        statement = statement.where(GATES.c.status == status)
    if run_id is not None:
        statement = statement.where(GATES.c.run_id == run_id)
    statement, parameters = GATE_ORDER.bounds(statement, limit, cursor)
    return GATE_ORDER.page(as_dicts(await connection.execute(statement, parameters)), limit)


def get_gate(session: Session, gate_id: uuid.UUID) -> dict[str, Any]:
    """One gate as the inbox shows it."""
    result = session.connection().execute(_gates().where(GATES.c.id == gate_id))
    return as_dicts(result)[0]


def pending_gates(
    session: Session, run_id: uuid.UUID, node_id: uuid.UUID | None = None
) -> list[Any]:
    """The run's pending gates (on `node_id` only, when given), oldest first."""
    statement = _gates().where(GATES.c.run_id == run_id, GATES.c.status == GateStatus.PENDING)
    if node_id is not None:
        statement = statement.where(GATES.c.node_id == node_id)
    result = session.connection().execute(statement.order_by(GATES.c.opened_at))
    return list(result)
