"""The Manager's bookkeeping, set-based, so that one pass of a worker is one transaction however
many nodes it touches: record the outcomes of finished attempts, start queued runs, make nodes
ready as their dependencies succeed, finish runs whose nodes are all final, and claim ready nodes
under a lease.

Every status change goes through `transitions`, so two workers racing for the same row cannot both
win: the loser's conditional update matches nothing and it moves on.
"""

import contextlib
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from apps.core.errors import InvalidTransition
from apps.core.settings import Settings
from apps.orchestrator import dispatch
from apps.orchestrator.dispatch import (
    ACTIVE_RUNS,
    NODES,
    database_time,
    database_time_later,
    time_parameters,
)
from apps.orchestrator.executor import Failed, NodeWork, Outcome, Succeeded
from apps.orchestrator.gates import Hold, close_gates, gate_when, open_gates
from apps.orchestrator.models import Artifact, Node, Run, utcnow
from apps.orchestrator.planning import OUTLINE_KEY, Outline, plan_report_body
from apps.orchestrator.states import NodeStatus, RunStatus
from apps.orchestrator.submission import add_plan
from apps.orchestrator.transitions import (
    move_node,
    move_nodes,
    move_run,
    move_runs,
    record_event,
    record_node_moves,
)

BATCH = 200
BUDGET_EXCEEDED = "budget_exceeded"
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with full jitter before attempt `attempt + 1`."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)))


@dataclass(slots=True)
class PassResult:
    """What one pass did: the attempts it claimed, the successes it could not record (their
    node ended meanwhile) and whether it changed anything."""

    claimed: list[NodeWork] = field(default_factory=list)
    refused: list[Succeeded] = field(default_factory=list)
    changed: bool = False


async def run_pass(
    session: AsyncSession,
    outcomes: Sequence[Outcome],
    *,
    worker: str,
    slots: int,
    settings: Settings,
    start_queued: bool = True,
) -> PassResult:
    """One pass of the Manager, in the caller's transaction; `start_queued` looks for queued
    runs too (a worker skips that while it only has its own outcomes to record)."""
    result = PassResult()
    succeeded, runs = await record_outcomes(session, outcomes, settings, result.refused)
    started = await start_queued_runs(session) if start_queued else []
    promoted = await promote_pending_nodes(session, after=succeeded, runs=started)
    # A run with a node just made ready is not finished: no need to look.
    finished = await finish_runs(session, runs - promoted)
    if slots > 0:
        result.claimed = await claim_ready_nodes(
            session,
            worker=worker,
            slots=slots,
            per_run=settings.run_concurrency,
            lease_seconds=settings.lease_seconds,
            default_timeout=settings.llm_timeout_seconds,
        )
    result.changed = bool(outcomes or started or promoted or finished or result.claimed)
    return result


async def record_outcomes(
    session: AsyncSession,
    outcomes: Sequence[Outcome],
    settings: Settings,
    refused: list[Succeeded],
) -> tuple[list[uuid.UUID], set[uuid.UUID]]:
    """Record finished attempts; the nodes that succeeded and the runs they touched.

    Successes whose node is no longer running that attempt are appended to `refused`.
    """
    successes = [outcome for outcome in outcomes if isinstance(outcome, Succeeded)]
    held = [outcome for outcome in successes if gate_when(outcome.work.gate) == "after"]
    plain = [outcome for outcome in successes if outcome not in held]
    recorded = await _record_successes(session, plain, settings)
    recorded |= await _hold_outputs(session, held)
    unrecorded = [outcome for outcome in successes if outcome.work.id not in recorded]
    failures = [outcome for outcome in outcomes if isinstance(outcome, Failed)]
    stopped = await _stop_in_cancelled_runs(session, [*unrecorded, *failures])
    refused.extend(outcome for outcome in unrecorded if outcome.work.id not in stopped)
    for failure in failures:
        if failure.work.id not in stopped:
            await end_attempt(
                session,
                failure.work,
                failure.message,
                retryable=failure.retryable,
                cause=failure.cause,
            )
    return list(recorded - {o.work.id for o in held}), {o.work.run_id for o in outcomes}


async def _hold_outputs(session: AsyncSession, held: Sequence[Succeeded]) -> set[uuid.UUID]:
    """Record outputs whose node waits for approval: the artifact, its usage and the gate."""
    holds, kept = [], []
    for outcome in held:
        try:
            await move_node(
                session,
                outcome.work,
                NodeStatus.RUNNING,
                NodeStatus.WAITING_APPROVAL,
                cause="completed",
                expected_attempt=outcome.work.attempt,
                lease_owner=None,
                lease_expires_at=None,
            )
        except InvalidTransition:
            continue
        row = _artifact_row(session, outcome)
        await dispatch.add_artifacts(await session.connection(), [row])
        holds.append(Hold(outcome.work.id, outcome.work.run_id, outcome.work.gate or {}, row["id"]))
        kept.append(outcome)
    if kept:
        await _add_usage(session, kept)
        await open_gates(session, holds)
    return {outcome.work.id for outcome in kept}


async def _stop_in_cancelled_runs(
    session: AsyncSession, outcomes: Sequence[Outcome]
) -> set[uuid.UUID]:
    """Attempts that ended in runs being cancelled: their nodes are cancelled, whatever the
    attempt answered; the ids of those nodes."""
    if not outcomes:
        return set()
    cancelling = set(
        await session.scalars(
            select(Run.id).where(
                Run.id.in_({outcome.work.run_id for outcome in outcomes}),
                Run.cancel_requested_at.is_not(None),
            )
        )
    )
    stopped = set()
    for outcome in outcomes:
        if outcome.work.run_id in cancelling:
            with contextlib.suppress(InvalidTransition):
                await move_node(
                    session,
                    outcome.work,
                    NodeStatus.RUNNING,
                    NodeStatus.CANCELLED,
                    cause="cancel",
                    expected_attempt=outcome.work.attempt,
                )
                stopped.add(outcome.work.id)
    return stopped


async def _record_successes(
    session: AsyncSession, successes: Sequence[Succeeded], settings: Settings
) -> set[uuid.UUID]:
    if not successes:
        return set()
    connection = await session.connection()
    attempts = [(outcome.work.id, outcome.work.attempt) for outcome in successes]
    moved = await dispatch.mark_succeeded(connection, attempts)
    record_node_moves(session, moved, NodeStatus.RUNNING, NodeStatus.SUCCEEDED, cause="completed")
    recorded = {node.id for node in moved}
    kept = [outcome for outcome in successes if outcome.work.id in recorded]
    if kept:
        await dispatch.add_artifacts(connection, [_artifact_row(session, o) for o in kept])
        await _add_usage(session, kept)
    for outcome in kept:
        if outcome.outline is not None:
            work = outcome.work
            await expand_report(
                session, work.run_id, work.id, work.run_title, outcome.outline, settings
            )
    return recorded


def _artifact_row(session: AsyncSession, outcome: Succeeded) -> dict[str, Any]:
    """The artifact row of a recorded success, with its `artifact.created` event."""
    output, artifact_id = outcome.output, uuid.uuid4()
    data = {"artifact_id": str(artifact_id), "name": output.name, "size": output.size}
    record_event(
        session, outcome.work.run_id, "artifact.created", node_id=outcome.work.id, data=data
    )
    return {
        "id": artifact_id,
        "run_id": outcome.work.run_id,
        "node_id": outcome.work.id,
        "name": output.name,
        "media_type": output.media_type,
        "size": output.size,
        "sha256": output.sha256,
        "storage_key": output.storage_key,
        "sidecar": output.sidecar,
        "created_at": utcnow(),
    }


async def _add_usage(session: AsyncSession, successes: Sequence[Succeeded]) -> None:
    """Add the calls' tokens and cost to their runs, and stop a run its next call would take
    past its budget."""
    totals: dict[uuid.UUID, tuple[int, int, float]] = defaultdict(lambda: (0, 0, 0.0))
    budgets = {outcome.work.run_id: outcome.work.budget for outcome in successes}
    for outcome in successes:
        prompt, completion, cost = totals[outcome.work.run_id]
        output = outcome.output
        totals[outcome.work.run_id] = (
            prompt + output.prompt_tokens,
            completion + output.completion_tokens,
            cost + output.cost,
        )
    connection = await session.connection()
    for run_id, (prompt, completion, cost) in totals.items():
        status, tokens, spent = await dispatch.add_usage(
            connection, run_id, prompt, completion, cost
        )
        if budgets[run_id] and status in ACTIVE_RUNS:
            await _stop_if_over_budget(session, run_id, budgets[run_id], tokens, spent)


def budget_problem(budget: dict[str, Any], tokens: int, cost: float, calls: int) -> str | None:
    """Why the run's next call would pass its budget (judged by its calls so far), or None."""
    max_tokens, max_cost = budget.get("max_tokens"), budget.get("max_cost")
    if max_tokens is not None and tokens + (tokens / calls if calls else 0) > max_tokens:
        return f"{BUDGET_EXCEEDED}: spent {tokens} of {max_tokens} tokens"
    if max_cost is not None and cost + (cost / calls if calls else 0) > max_cost:
        return f"{BUDGET_EXCEEDED}: spent ${cost:.6f} of ${max_cost:.6f}"
    return None


async def _stop_if_over_budget(
    session: AsyncSession,
    run_id: uuid.UUID,
    budget: dict[str, Any],
    tokens: int,
    cost: float,
) -> None:
    calls = await session.scalar(select(func.count()).where(Artifact.run_id == run_id))
    if budget_problem(budget, tokens, cost, calls or 0) is not None:
        # The run fails once its calls in flight have ended, saying what they all cost.
        await skip_unstarted(session, run_id, BUDGET_EXCEEDED)


async def expand_report(
    session: AsyncSession,
    run_id: uuid.UUID,
    outline_node: uuid.UUID,
    title: str,
    outline: Outline,
    settings: Settings,
) -> None:
    """Plan a report's sections, review and assembly once its outline is in."""
    last = await session.scalar(select(func.max(Node.position)).where(Node.run_id == run_id))
    add_plan(
        session,
        run_id,
        plan_report_body(title, outline),
        settings,
        first_position=(last or 0) + 1,
        planned_before={OUTLINE_KEY: outline_node},
    )
    await session.flush()


class Attempt(Protocol):
    """The attempt of a node that ended: a claimed `NodeWork`, or a row read back."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def run_id(self) -> uuid.UUID: ...
    @property
    def key(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...


async def end_attempt(
    session: AsyncSession, node: Attempt, message: str, *, retryable: bool, cause: str
) -> bool:
    """A failed attempt: back to ready after a backoff while attempts remain, else failed.

    False when the node is no longer running that attempt (it ended meanwhile)."""
    dialect = session.bind.dialect.name
    try:
        if retryable and node.attempt < node.max_attempts:
            await move_node(
                session,
                node,
                NodeStatus.RUNNING,
                NodeStatus.READY,
                cause=cause,
                error=message,
                data={"attempt": node.attempt, "max_attempts": node.max_attempts},
                expected_attempt=node.attempt,
                parameters=time_parameters(dialect, backoff_seconds(node.attempt)),
                next_attempt_at=database_time_later(dialect),
                lease_owner=None,
                lease_expires_at=None,
            )
            return True
        reason = f"node {node.key!r} failed after {node.attempt} attempt(s): {message}"
        await move_node(
            session,
            node,
            NodeStatus.RUNNING,
            NodeStatus.FAILED,
            cause=cause,
            error=reason,
            expected_attempt=node.attempt,
        )
    except InvalidTransition:
        return False
    await skip_unstarted(session, node.run_id, f"node {node.key!r} failed")
    return True


async def skip_unstarted(session: AsyncSession, run_id: uuid.UUID, cause: str) -> None:
    """Nothing new starts in a run that is failing: its pending and ready nodes are skipped,
    and so are those waiting at a gate, whose gates are closed."""
    for status in (NodeStatus.PENDING, NodeStatus.READY, NodeStatus.WAITING_APPROVAL):
        await move_nodes(session, [Node.run_id == run_id], status, NodeStatus.SKIPPED, cause=cause)
    await close_gates(session, run_id, cause)


async def start_queued_runs(session: AsyncSession) -> list[uuid.UUID]:
    """Move the oldest queued runs to running; their ids."""
    queued = (
        select(Run.id)
        .where(Run.status == RunStatus.QUEUED)
        .order_by(Run.created_at)
        .limit(BATCH)
        .scalar_subquery()
    )
    return await move_runs(
        session, [Run.id.in_(queued)], RunStatus.QUEUED, RunStatus.RUNNING, cause="worker"
    )


async def promote_pending_nodes(
    session: AsyncSession,
    *,
    after: Sequence[uuid.UUID] = (),
    runs: Sequence[uuid.UUID] = (),
) -> set[uuid.UUID]:
    """Make ready the pending nodes of active runs whose dependencies have all succeeded, among
    the dependents of the nodes `after` and the nodes of `runs`; the runs they belong to."""
    moved = await dispatch.promote(await session.connection(), after=after, runs=runs)
    record_node_moves(session, moved, NodeStatus.PENDING, NodeStatus.READY, cause="dependencies")
    held = [row for row in moved if gate_when(row.gate) == "before"]
    if held:
        await move_nodes(
            session,
            [Node.id.in_([row.id for row in held])],
            NodeStatus.READY,
            NodeStatus.WAITING_APPROVAL,
            cause="gate",
        )
        await open_gates(session, [Hold(row.id, row.run_id, row.gate) for row in held])
    return {node.run_id for node in moved}


async def finish_runs(session: AsyncSession, run_ids: Iterable[uuid.UUID]) -> int:
    """End those of `run_ids` whose nodes are all final (cancelled, when a cancel was asked
    for); how many."""
    run_ids = list(run_ids)
    if not run_ids:
        return 0
    done = await dispatch.finished_runs(await session.connection(), run_ids)
    for run in done:
        if run.cancelling:
            await move_run(session, run.id, run.status, RunStatus.CANCELLED, cause="cancel")
            continue
        error = await _why_failed(session, run.id, run.budget or {}, run.total_tokens, run.cost)
        target = RunStatus.FAILED if error else RunStatus.SUCCEEDED
        await move_run(session, run.id, run.status, target, cause="nodes", error=error)
    return len(done)


async def _why_failed(
    session: AsyncSession, run_id: uuid.UUID, budget: dict[str, Any], tokens: int, cost: float
) -> str | None:
    """The first failed node's reason; else, when nodes were skipped, the budget they stopped
    for, with what the run spent in the end; else None: the run succeeded."""
    failed = await session.scalar(
        select(Node.error)
        .where(Node.run_id == run_id, Node.status == NodeStatus.FAILED)
        .order_by(Node.finished_at)
        .limit(1)
    )
    if failed or not budget:
        return failed
    skipped = select(Node.id).where(Node.run_id == run_id, Node.status == NodeStatus.SKIPPED)
    if not await session.scalar(select(exists(skipped))):
        return None
    if budget.get("max_tokens") is not None and tokens > 0:
        return f"{BUDGET_EXCEEDED}: spent {tokens} of {budget['max_tokens']} tokens"
    return f"{BUDGET_EXCEEDED}: spent ${cost:.6f} of ${budget.get('max_cost', 0):.6f}"


async def claim_ready_nodes(
    session: AsyncSession,
    *,
    worker: str,
    slots: int,
    per_run: int,
    lease_seconds: float,
    default_timeout: float,
) -> list[NodeWork]:
    """Claim up to `slots` ready nodes under a lease, oldest run first; what each needs to run."""
    connection = await session.connection()
    claimed = await dispatch.claim(
        connection, worker=worker, slots=slots, per_run=per_run, lease_seconds=lease_seconds
    )
    if not claimed:
        return []
    record_node_moves(
        session,
        claimed,
        NodeStatus.READY,
        NodeStatus.RUNNING,
        cause="claimed",
        data={"worker": worker},
    )
    upstream = await dispatch.upstream_artifacts(connection, [row.id for row in claimed])
    return [
        NodeWork(
            id=row.id,
            run_id=row.run_id,
            run_title=row.title,
            key=row.key,
            role=row.role,
            prompt=row.prompt,
            provider=row.provider,
            model=row.model,
            attempt=row.attempt,
            max_attempts=row.max_attempts,
            timeout_seconds=row.timeout_seconds or default_timeout,
            upstream=tuple(upstream[row.id].items()),
            budget=row.budget,
            gate=row.gate,
        )
        for row in claimed
    ]


async def renew_leases(session: AsyncSession, *, worker: str, lease_seconds: float) -> int:
    """Extend the leases of the nodes `worker` is running (its heartbeat)."""
    dialect = session.bind.dialect.name
    connection = await session.connection()
    result = await connection.execute(
        update(NODES)
        .where(NODES.c.lease_owner == worker, NODES.c.status == NodeStatus.RUNNING)
        .values(lease_expires_at=database_time_later(dialect)),
        time_parameters(dialect, lease_seconds),
    )
    return result.rowcount


async def take_back_expired_leases(session: AsyncSession) -> int:
    """Retry (or fail, with no attempts left) running nodes whose worker stopped renewing."""
    dialect = session.bind.dialect.name
    nodes = (
        await session.execute(
            select(
                Node.id,
                Node.run_id,
                Node.key,
                Node.attempt,
                Node.max_attempts,
                Node.lease_owner,
                Run.cancel_requested_at,
            )
            .join(Run, Run.id == Node.run_id)
            .where(
                Node.status == NodeStatus.RUNNING,
                Node.lease_expires_at < database_time(dialect),
            )
            .limit(BATCH),
            time_parameters(dialect),
        )
    ).all()
    for node in nodes:
        if node.cancel_requested_at is not None:
            with contextlib.suppress(InvalidTransition):
                await move_node(
                    session,
                    node,
                    NodeStatus.RUNNING,
                    NodeStatus.CANCELLED,
                    cause="cancel",
                    expected_attempt=node.attempt,
                )
            continue
        message = f"lease of worker {node.lease_owner} expired"
        await end_attempt(session, node, message, retryable=True, cause="lease_expired")
    await finish_runs(session, {node.run_id for node in nodes})
    return len(nodes)


async def attempts_to_stop(
    session: AsyncSession, *, worker: str, node_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, bool]:
    """Those of `node_ids` whose attempts `worker` should stop, each with whether it still holds
    the node (its run is being cancelled: the worker records the stop) or not (the node ended,
    or its lease was taken back: someone else did)."""
    if not node_ids:
        return {}
    held = (Node.status == NodeStatus.RUNNING) & (Node.lease_owner == worker)
    rows = await session.execute(
        select(Node.id, held)
        .join(Run, Run.id == Node.run_id)
        .where(Node.id.in_(node_ids), ~held | Run.cancel_requested_at.is_not(None))
    )
    return {node_id: bool(still_held) for node_id, still_held in rows}
