"""The Manager's steps, set-based so that a pass of a worker (see `passes`) is one transaction
however many nodes it touches: start queued runs, make nodes ready as their dependencies succeed,
claim ready nodes under a lease, end failed attempts (retry or fail), skip what a failing run will
not start, and finish runs whose nodes are all final.

Every status change goes through `transitions`, so two workers racing for the same row cannot both
win: the loser's conditional update matches nothing and it moves on.
"""

import random
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session

from apps.core.database import take_at_commit
from apps.core.errors import InvalidTransition
from apps.core.settings import Settings
from apps.orchestrator.engine import statements
from apps.orchestrator.engine.budgets import RunBudgets
from apps.orchestrator.engine.executor import NodeWork
from apps.orchestrator.engine.gates import Hold, close_gates, gate_when, open_gates
from apps.orchestrator.engine.submission import add_plan
from apps.orchestrator.model.clock import database_time_later, time_parameters
from apps.orchestrator.model.models import Node, Run
from apps.orchestrator.model.prepared import connection_of
from apps.orchestrator.model.states import NodeStatus, RunStatus
from apps.orchestrator.model.transitions import (
    INSERT_EVENTS,
    move_node,
    move_nodes,
    move_run,
    move_runs,
    record_node_moves,
)
from apps.orchestrator.plans.planning import OUTLINE_KEY, Outline, plan_report_body

BATCH = 200
BUDGET_EXCEEDED = "budget_exceeded"
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
# An attempt a stopping worker hands back (SIGTERM, a rolling deploy): nothing went wrong with
# the node, so it is run again at once, whatever attempts it has left.
HANDED_BACK = "worker_stopped"


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with full jitter before attempt `attempt + 1`."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)))


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


class EndedRun(NamedTuple):
    """A run that a transaction ended: the status it ended in, and why when it failed."""

    id: uuid.UUID
    status: RunStatus
    error: str | None


def cancel_attempt(session: Session, node: Attempt) -> bool:
    """A running attempt in a run being cancelled: its node is cancelled. False when the node
    is no longer running that attempt."""
    try:
        move_node(
            session,
            node,
            NodeStatus.RUNNING,
            NodeStatus.CANCELLED,
            cause="cancel",
            expected_attempt=node.attempt,
        )
    except InvalidTransition:
        return False
    return True


def expand_report(
    session: Session,
    run_id: uuid.UUID,
    outline_node: uuid.UUID,
    title: str,
    outline: Outline,
    settings: Settings,
) -> None:
    """Plan a report's sections, review and assembly once its outline is in."""
    last = session.scalar(select(func.max(Node.position)).where(Node.run_id == run_id))
    add_plan(
        session,
        run_id,
        plan_report_body(title, outline),
        settings,
        first_position=(last or 0) + 1,
        planned_before={OUTLINE_KEY: outline_node},
    )
    session.flush()


def end_attempt(
    session: Session, node: Attempt, message: str, *, retryable: bool, cause: str
) -> NodeStatus | None:
    """A failed attempt: back to ready after a backoff while attempts remain, else failed; the
    status the node moved to (`READY` or `FAILED`), None when it was no longer running that
    attempt (it ended meanwhile)."""
    dialect = session.get_bind().dialect.name
    handed_back = cause == HANDED_BACK
    try:
        if retryable and (node.attempt < node.max_attempts or handed_back):
            move_node(
                session,
                node,
                NodeStatus.RUNNING,
                NodeStatus.READY,
                cause=cause,
                error=message,
                data={"attempt": node.attempt, "max_attempts": node.max_attempts},
                expected_attempt=node.attempt,
                parameters=time_parameters(
                    dialect, 0.0 if handed_back else backoff_seconds(node.attempt)
                ),
                next_attempt_at=database_time_later(dialect),
                lease_owner=None,
                lease_expires_at=None,
            )
            return NodeStatus.READY
        reason = f"node {node.key!r} failed after {node.attempt} attempt(s): {message}"
        move_node(
            session,
            node,
            NodeStatus.RUNNING,
            NodeStatus.FAILED,
            cause=cause,
            error=reason,
            expected_attempt=node.attempt,
        )
    except InvalidTransition:
        return None
    skip_unstarted(session, node.run_id, f"node {node.key!r} failed")
    return NodeStatus.FAILED


def skip_unstarted(session: Session, run_id: uuid.UUID, cause: str) -> None:
    """Nothing new starts in a run that is failing: its pending and ready nodes are skipped,
    and so are those waiting at a gate, whose gates are closed."""
    for status in (NodeStatus.PENDING, NodeStatus.READY, NodeStatus.WAITING_APPROVAL):
        move_nodes(session, [Node.run_id == run_id], status, NodeStatus.SKIPPED, cause=cause)
    close_gates(session, run_id, cause)


def start_queued_runs(
    session: Session, where: Sequence[ColumnElement[bool]] = ()
) -> list[uuid.UUID]:
    """Move the oldest queued runs (of those matching `where`) to running; their ids.

    A run another transaction holds (a cancel, another worker starting it) is passed over: see
    `locks`."""
    queued = (
        select(Run.id)
        .where(Run.status == RunStatus.QUEUED, *where)
        .order_by(Run.created_at)
        .limit(BATCH)
        .with_for_update(key_share=True, skip_locked=True)
        .scalar_subquery()
    )
    return move_runs(
        session, [Run.id.in_(queued)], RunStatus.QUEUED, RunStatus.RUNNING, cause="worker"
    )


def promote_pending_nodes(
    session: Session,
    *,
    after: Sequence[uuid.UUID] = (),
    runs: Sequence[uuid.UUID] = (),
) -> set[uuid.UUID]:
    """Make ready the pending nodes of active runs whose dependencies have all succeeded, among
    the dependents of the nodes `after` and the nodes of `runs`; the runs they belong to."""
    return record_promotions(
        session, statements.promote(connection_of(session), after=after, runs=runs)
    )


def record_promotions(session: Session, moved: Sequence[Any]) -> set[uuid.UUID]:
    """The events of nodes just made ready (rows of `statements.promote`), and the gates of
    those that wait for approval before they start; the runs they belong to."""
    record_node_moves(session, moved, NodeStatus.PENDING, NodeStatus.READY, cause="dependencies")
    held = [row for row in moved if gate_when(row.gate) == "before"]
    if held:
        move_nodes(
            session,
            [Node.id.in_([row.id for row in held])],
            NodeStatus.READY,
            NodeStatus.WAITING_APPROVAL,
            cause="gate",
        )
        open_gates(session, [Hold(row.id, row.run_id, row.gate) for row in held])
    return {node.run_id for node in moved}


def finish_runs(session: Session, run_ids: Iterable[uuid.UUID]) -> list[EndedRun]:
    """End those of `run_ids` whose nodes are all final (cancelled, when a cancel was asked
    for); the runs ended."""
    run_ids = list(run_ids)
    if not run_ids:
        return []
    ended = []
    for run in statements.finished_runs(connection_of(session), run_ids):
        if run.cancelling:
            move_run(session, run.id, run.status, RunStatus.CANCELLED, cause="cancel")
            ended.append(EndedRun(run.id, RunStatus.CANCELLED, None))
            continue
        error = _why_failed(session, run.id, run.budget or {}, run.total_tokens, run.cost)
        target = RunStatus.FAILED if error else RunStatus.SUCCEEDED
        move_run(session, run.id, run.status, target, cause="nodes", error=error)
        ended.append(EndedRun(run.id, target, error))
    return ended


def _why_failed(
    session: Session, run_id: uuid.UUID, budget: dict[str, Any], tokens: int, cost: float
) -> str | None:
    """The first failed node's reason; else, when nodes were skipped, the budget they stopped
    for, with what the run spent in the end; else None: the run succeeded."""
    failed = session.scalar(
        select(Node.error)
        .where(Node.run_id == run_id, Node.status == NodeStatus.FAILED)
        .order_by(Node.finished_at)
        .limit(1)
    )
    if failed or not budget:
        return failed
    skipped = select(Node.id).where(Node.run_id == run_id, Node.status == NodeStatus.SKIPPED)
    if not session.scalar(select(exists(skipped))):
        return None
    if budget.get("max_tokens") is not None and tokens > 0:
        return f"{BUDGET_EXCEEDED}: spent {tokens} of {budget['max_tokens']} tokens"
    return f"{BUDGET_EXCEEDED}: spent ${cost:.6f} of ${budget.get('max_cost', 0):.6f}"


def claim_ready_nodes(
    session: Session,
    *,
    worker: str,
    slots: int,
    per_run: int,
    lease_seconds: float,
    default_timeout: float,
    budgets: RunBudgets,
    scope: statements.RunScope = statements.EVERY_RUN,
) -> list[NodeWork]:
    """Claim up to `slots` ready nodes of the runs of `scope` under a lease, oldest run first;
    what each needs to run (its run's budget from `budgets`).

    On PostgreSQL, when the pass has recorded events, the claim inserts them with those of
    the nodes it starts: one round trip less (see `statements.claim`)."""
    connection = connection_of(session)
    events = []
    if connection.dialect.name == "postgresql":
        events = take_at_commit(session, INSERT_EVENTS)
    claimed = statements.claim(
        connection,
        worker=worker,
        slots=slots,
        per_run=per_run,
        lease_seconds=lease_seconds,
        scope=scope,
        events=events,
    )
    if not claimed:
        return []
    if not events:
        record_node_moves(
            session,
            claimed,
            NodeStatus.READY,
            NodeStatus.RUNNING,
            cause="claimed",
            data={"worker": worker},
        )
    budget = budgets.of(connection, {row.run_id for row in claimed})
    return [_node_work(row, budget[row.run_id], default_timeout) for row in claimed]


def _node_work(row: Any, budget: dict[str, Any] | None, default_timeout: float) -> NodeWork:
    """What a claimed node needs to run, from its claimed row."""
    upstream = statements.upstream_of(row)
    return NodeWork(
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
        upstream=tuple((key, found[0]) for key, found in upstream.items()),
        upstream_bytes=sum(size for _, size in upstream.values()),
        budget=budget,
        gate=row.gate,
    )
