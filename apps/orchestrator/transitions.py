"""Status changes of runs and nodes, each written with its event in the caller's transaction.

A change is a conditional UPDATE on the status the caller last saw. If another process got there
first (a cancel, a lease taken back), the row no longer matches, nothing is written and
`InvalidTransition` says what the row is now: a late worker cannot overwrite a final state.
"""

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from apps.core.errors import InvalidTransition
from apps.orchestrator.models import Event, Node, Run, utcnow
from apps.orchestrator.states import (
    NODE_TERMINAL,
    RUN_TERMINAL,
    NodeStatus,
    RunStatus,
    check_node_transition,
    check_run_transition,
)

RUN_EVENTS = {
    RunStatus.RUNNING: "run.started",
    RunStatus.WAITING: "run.waiting",
    RunStatus.SUCCEEDED: "run.succeeded",
    RunStatus.FAILED: "run.failed",
    RunStatus.CANCELLED: "run.cancelled",
}
NODE_EVENTS = {
    NodeStatus.READY: "node.ready",
    NodeStatus.RUNNING: "node.started",
    NodeStatus.WAITING_APPROVAL: "node.waiting_approval",
    NodeStatus.SUCCEEDED: "node.succeeded",
    NodeStatus.FAILED: "node.failed",
    NodeStatus.CANCELLED: "node.cancelled",
    NodeStatus.SKIPPED: "node.skipped",
}


def record_event(
    session: AsyncSession,
    run_id: uuid.UUID,
    type: str,
    *,
    node_id: uuid.UUID | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    """Add an event to the session: it becomes visible with the change it describes."""
    event = Event(run_id=run_id, node_id=node_id, type=type, data=data or {})
    session.add(event)
    return event


async def move_run(
    session: AsyncSession,
    run_id: uuid.UUID,
    current: RunStatus,
    target: RunStatus,
    *,
    cause: str,
    error: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Move a run from `current` to `target` and record `run.<target>`; see the module doc."""
    check_run_transition(current, target)
    now = utcnow()
    values: dict[str, Any] = {"status": target, "updated_at": now}
    if target is RunStatus.RUNNING:
        values["started_at"] = func.coalesce(Run.started_at, now)
    if target in RUN_TERMINAL:
        values |= {"finished_at": now, "error": error}
    await _update_or_refuse(session, Run, run_id, current, values, "run")
    details = {"from": current.value, "cause": cause, **({"error": error} if error else {})}
    record_event(session, run_id, RUN_EVENTS[target], data=details | (data or {}))


async def move_node(
    session: AsyncSession,
    node: Node,
    current: NodeStatus,
    target: NodeStatus,
    *,
    cause: str,
    error: str | None = None,
    data: dict[str, Any] | None = None,
    **columns: Any,
) -> None:
    """Move a node from `current` to `target`, setting `columns` too, and record its event.

    Running back to ready is a retry and is recorded as `node.retrying`.
    """
    check_node_transition(current, target)
    now = utcnow()
    values: dict[str, Any] = {"status": target, "updated_at": now, **columns}
    if target is NodeStatus.RUNNING:
        values["started_at"] = now
    if target in NODE_TERMINAL:
        values |= {
            "finished_at": now,
            "error": error,
            "lease_owner": None,
            "lease_expires_at": None,
        }
    elif error is not None:
        values["error"] = error
    await _update_or_refuse(session, Node, node.id, current, values, "node")
    retry = current is NodeStatus.RUNNING and target is NodeStatus.READY
    kind = "node.retrying" if retry else NODE_EVENTS[target]
    details = {"from": current.value, "cause": cause, **({"error": error} if error else {})}
    record_event(session, node.run_id, kind, node_id=node.id, data=details | (data or {}))


async def _update_or_refuse(
    session: AsyncSession,
    model: type[Run] | type[Node],
    row_id: uuid.UUID,
    current: RunStatus | NodeStatus,
    values: dict[str, Any],
    kind: str,
) -> None:
    result = await session.execute(
        update(model)
        .where(model.id == row_id, model.status == current)
        .values(values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        return
    now_status = await session.scalar(select(model.status).where(model.id == row_id))
    if now_status is None:
        raise InvalidTransition(f"{kind} {row_id} does not exist")
    raise InvalidTransition(f"{kind} is {now_status} now, not {current}")
