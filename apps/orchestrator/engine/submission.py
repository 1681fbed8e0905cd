"""Submitting a task: the Supervisor's plan stored as a queued run, its nodes and their edges.

The Manager's part happens here too: each node is bound to the agent settings give its role.
Everything is added to the caller's session, so a rejected or failed submission writes nothing.
"""

import uuid

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from apps.core.settings import Settings
from apps.orchestrator.model.models import DEPENDENCIES, Node, Run
from apps.orchestrator.model.transitions import record_event
from apps.orchestrator.plans.agents import agent_for
from apps.orchestrator.plans.gate_policy import gate_policy_of, gate_to_store
from apps.orchestrator.plans.planning import PlannedNode, plan_task
from apps.orchestrator.plans.task_specs import TaskRequest


def _node(run_id: uuid.UUID, position: int, planned: PlannedNode, settings: Settings) -> Node:
    agent = agent_for(settings, planned.role)
    return Node(
        id=uuid.uuid4(),
        run_id=run_id,
        key=planned.key,
        position=position,
        role=planned.role,
        prompt=planned.prompt,
        provider=agent.provider,
        model=agent.model,
        gate=gate_to_store(gate_policy_of(settings), planned.role, planned.key, planned.gate),
        max_attempts=planned.max_attempts,
        timeout_seconds=planned.timeout_seconds,
    )


def add_plan(
    session: Session,
    run_id: uuid.UUID,
    plan: list[PlannedNode],
    settings: Settings,
    *,
    first_position: int = 0,
    planned_before: dict[str, uuid.UUID] | None = None,
) -> list[Node]:
    """Write `plan`'s nodes and edges in the session; deps may name nodes `planned_before`.

    The edges go in as plain rows in one statement: a 500-node plan may have 124,750 of them,
    and as ORM objects they held the process's event loop for seconds, stalling every other
    request and stream it served.
    """
    nodes = {
        planned.key: _node(run_id, first_position + index, planned, settings)
        for index, planned in enumerate(plan)
    }
    ids = {**(planned_before or {}), **{key: node.id for key, node in nodes.items()}}
    session.add_all(nodes.values())
    edges = [
        {"node_id": ids[planned.key], "depends_on_id": ids[dep]}
        for planned in plan
        for dep in planned.deps
    ]
    if edges:
        session.flush()  # the edges' foreign keys need the nodes first
        session.execute(insert(DEPENDENCIES), edges)
    return list(nodes.values())


async def submit_task(
    session: AsyncSession, request: TaskRequest, *, created_by: str, settings: Settings
) -> uuid.UUID:
    """Store `request` as a queued run with its planned nodes; returns the run's id."""
    run = Run(
        id=uuid.uuid4(),
        title=request.title,
        task_spec=request.task_spec.model_dump(mode="json", exclude_none=True),
        created_by=created_by,
    )
    session.add(run)
    await session.flush()
    plan = plan_task(request.title, request.task_spec)
    nodes = await session.run_sync(add_plan, run.id, plan, settings)
    record_event(
        session.sync_session,
        run.id,
        "run.created",
        data={
            "title": run.title,
            "type": request.task_spec.type,
            "nodes": len(nodes),
            "by": created_by,
        },
    )
    await session.flush()
    return run.id
