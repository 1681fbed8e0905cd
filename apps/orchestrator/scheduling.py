"""The Manager's bookkeeping, one transaction each: start queued runs, make nodes ready as their
dependencies succeed, claim ready nodes under a lease, record what a node's attempt ended with,
take back expired leases and finish runs whose nodes are all final.

Every status change goes through `transitions`, so two workers racing for the same row cannot both
win: the loser's conditional update matches nothing and it moves on.
"""

import random
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from apps.core.errors import InvalidTransition, NotFound
from apps.orchestrator.executor import NodeOutput
from apps.orchestrator.models import Artifact, Node, NodeDependency, Run, utcnow
from apps.orchestrator.states import NODE_TERMINAL, NodeStatus, RunStatus
from apps.orchestrator.transitions import move_node, move_run, record_event

BATCH = 200
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with full jitter before attempt `attempt + 1`."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)))


async def start_queued_runs(session: AsyncSession) -> int:
    """Move queued runs to running; returns how many started."""
    run_ids = (
        await session.scalars(
            select(Run.id)
            .where(Run.status == RunStatus.QUEUED)
            .order_by(Run.created_at)
            .limit(BATCH)
        )
    ).all()
    started = 0
    for run_id in run_ids:
        try:
            await move_run(session, run_id, RunStatus.QUEUED, RunStatus.RUNNING, cause="worker")
            started += 1
        except InvalidTransition:
            continue
    return started


async def promote_ready_nodes(session: AsyncSession) -> int:
    """Move pending nodes of running runs whose dependencies all succeeded to ready."""
    upstream = aliased(Node)
    blocked = (
        select(NodeDependency.node_id)
        .join(upstream, upstream.id == NodeDependency.depends_on_id)
        .where(NodeDependency.node_id == Node.id, upstream.status != NodeStatus.SUCCEEDED)
    )
    nodes = (
        await session.scalars(
            select(Node)
            .join(Run, Run.id == Node.run_id)
            .where(Node.status == NodeStatus.PENDING, Run.status == RunStatus.RUNNING)
            .where(~exists(blocked))
            .order_by(Run.created_at, Node.position)
            .limit(BATCH)
        )
    ).all()
    for node in nodes:
        await move_node(session, node, NodeStatus.PENDING, NodeStatus.READY, cause="dependencies")
    return len(nodes)


async def claim_ready_nodes(
    session: AsyncSession, *, worker: str, slots: int, per_run: int, lease_seconds: float
) -> list[uuid.UUID]:
    """Claim up to `slots` due ready nodes, at most `per_run` running per run; their ids."""
    now = utcnow()
    running = dict(
        (
            await session.execute(
                select(Node.run_id, func.count())
                .where(Node.status == NodeStatus.RUNNING)
                .group_by(Node.run_id)
            )
        ).all()
    )
    candidates = (
        await session.scalars(
            select(Node)
            .join(Run, Run.id == Node.run_id)
            .where(Node.status == NodeStatus.READY, Run.status == RunStatus.RUNNING)
            .where((Node.next_attempt_at.is_(None)) | (Node.next_attempt_at <= now))
            .order_by(Run.created_at, Node.position)
            .limit(BATCH)
        )
    ).all()
    claimed: list[uuid.UUID] = []
    for node in candidates:
        if len(claimed) == slots:
            break
        if running.get(node.run_id, 0) >= per_run:
            continue
        try:
            await move_node(
                session,
                node,
                NodeStatus.READY,
                NodeStatus.RUNNING,
                cause="claimed",
                data={"worker": worker, "attempt": node.attempt + 1},
                attempt=Node.attempt + 1,
                lease_owner=worker,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                next_attempt_at=None,
            )
        except InvalidTransition:
            continue
        running[node.run_id] = running.get(node.run_id, 0) + 1
        claimed.append(node.id)
    return claimed


async def renew_leases(session: AsyncSession, *, worker: str, lease_seconds: float) -> int:
    """Extend the leases of the nodes `worker` is running (its heartbeat)."""
    result = await session.execute(
        update(Node)
        .where(Node.lease_owner == worker, Node.status == NodeStatus.RUNNING)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


async def take_back_expired_leases(session: AsyncSession) -> int:
    """Retry (or fail, with no attempts left) running nodes whose worker stopped renewing."""
    nodes = (
        await session.scalars(
            select(Node)
            .where(Node.status == NodeStatus.RUNNING, Node.lease_expires_at < utcnow())
            .limit(BATCH)
        )
    ).all()
    for node in nodes:
        message = f"lease of worker {node.lease_owner} expired"
        try:
            await end_attempt(session, node, message, retryable=True, cause="lease_expired")
        except InvalidTransition:
            continue
    return len(nodes)


async def record_success(session: AsyncSession, node: Node, output: NodeOutput) -> uuid.UUID:
    """Record a succeeded attempt: its artifact, the run's usage and `node.succeeded`."""
    await move_node(session, node, NodeStatus.RUNNING, NodeStatus.SUCCEEDED, cause="completed")
    artifact = Artifact(
        id=uuid.uuid4(),
        run_id=node.run_id,
        node_id=node.id,
        name=output.name,
        media_type=output.media_type,
        size=output.size,
        sha256=output.sha256,
        storage_key=output.storage_key,
        sidecar=output.sidecar,
    )
    session.add(artifact)
    await session.execute(
        update(Run)
        .where(Run.id == node.run_id)
        .values(
            prompt_tokens=Run.prompt_tokens + output.prompt_tokens,
            completion_tokens=Run.completion_tokens + output.completion_tokens,
            total_tokens=Run.total_tokens + output.prompt_tokens + output.completion_tokens,
            cost=Run.cost + output.cost,
        )
        .execution_options(synchronize_session=False)
    )
    record_event(
        session,
        node.run_id,
        "artifact.created",
        node_id=node.id,
        data={"artifact_id": str(artifact.id), "name": output.name, "size": output.size},
    )
    return artifact.id


async def end_attempt(
    session: AsyncSession, node: Node, message: str, *, retryable: bool, cause: str
) -> None:
    """A failed attempt: back to ready after a backoff while attempts remain, else failed."""
    if retryable and node.attempt < node.max_attempts:
        await move_node(
            session,
            node,
            NodeStatus.RUNNING,
            NodeStatus.READY,
            cause=cause,
            error=message,
            data={"attempt": node.attempt, "max_attempts": node.max_attempts},
            next_attempt_at=utcnow() + timedelta(seconds=backoff_seconds(node.attempt)),
            lease_owner=None,
            lease_expires_at=None,
        )
        return
    reason = f"node {node.key!r} failed after {node.attempt} attempt(s): {message}"
    await move_node(session, node, NodeStatus.RUNNING, NodeStatus.FAILED, cause=cause, error=reason)
    await _skip_unstarted(session, node.run_id, f"node {node.key!r} failed")


async def _skip_unstarted(session: AsyncSession, run_id: uuid.UUID, cause: str) -> None:
    """Nothing new starts in a run that is failing: its pending and ready nodes are skipped."""
    nodes = (
        await session.scalars(
            select(Node).where(
                Node.run_id == run_id, Node.status.in_((NodeStatus.PENDING, NodeStatus.READY))
            )
        )
    ).all()
    for node in nodes:
        await move_node(session, node, node.status, NodeStatus.SKIPPED, cause=cause)


def budget_problem(budget: dict[str, Any], tokens: int, cost: float, calls: int) -> str | None:
    """Why the run's next call would pass its budget (judged by its calls so far), or None."""
    max_tokens, max_cost = budget.get("max_tokens"), budget.get("max_cost")
    if max_tokens is not None and tokens + (tokens / calls if calls else 0) > max_tokens:
        return f"budget_exceeded: spent {tokens} of {max_tokens} tokens"
    if max_cost is not None and cost + (cost / calls if calls else 0) > max_cost:
        return f"budget_exceeded: spent ${cost:.6f} of ${max_cost:.6f}"
    return None


async def stop_runs_over_budget(session: AsyncSession) -> int:
    """Fail running runs whose next call would pass their budget; nothing new starts in them."""
    calls = select(func.count(Artifact.id)).where(Artifact.run_id == Run.id).scalar_subquery()
    runs = await session.execute(
        select(Run.id, Run.task_spec, Run.total_tokens, Run.cost, calls).where(
            Run.status == RunStatus.RUNNING
        )
    )
    stopped = 0
    for run_id, task_spec, tokens, cost, done in runs.all():
        problem = budget_problem(task_spec.get("budget") or {}, tokens, cost, done)
        if problem is None:
            continue
        await move_run(
            session, run_id, RunStatus.RUNNING, RunStatus.FAILED, cause="budget", error=problem
        )
        await _skip_unstarted(session, run_id, "budget_exceeded")
        stopped += 1
    return stopped


async def finish_runs(session: AsyncSession) -> int:
    """End running runs whose nodes are all final: succeeded, or failed with the first reason."""
    unfinished = select(Node.id).where(
        Node.run_id == Run.id, Node.status.not_in(tuple(NODE_TERMINAL))
    )
    runs = (
        await session.scalars(
            select(Run.id).where(Run.status == RunStatus.RUNNING, ~exists(unfinished)).limit(BATCH)
        )
    ).all()
    for run_id in runs:
        failed = (
            await session.execute(
                select(Node.error)
                .where(Node.run_id == run_id, Node.status == NodeStatus.FAILED)
                .order_by(Node.finished_at)
                .limit(1)
            )
        ).scalar_one_or_none()
        target = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
        try:
            await move_run(session, run_id, RunStatus.RUNNING, target, cause="nodes", error=failed)
        except InvalidTransition:
            continue
    return len(runs)


async def cancel_run(session: AsyncSession, run_id: uuid.UUID, *, cause: str) -> None:
    """Cancel a run and its unfinished nodes; `InvalidTransition` if it has already ended."""
    status = await session.scalar(select(Run.status).where(Run.id == run_id))
    if status is None:
        raise NotFound(f"run {run_id} not found")
    await move_run(session, run_id, status, RunStatus.CANCELLED, cause=cause)
    nodes = (
        await session.scalars(
            select(Node).where(Node.run_id == run_id, Node.status.not_in(tuple(NODE_TERMINAL)))
        )
    ).all()
    for node in nodes:
        await move_node(session, node, node.status, NodeStatus.CANCELLED, cause=cause)
