"""A worker's pass: everything the Manager has to do, in one transaction.

A pass covers every run, or the runs of a `RunScope`: when a pass fails on a run's data,
`pass_runner` passes run by run to find the run at fault and fails it (`fail_run_at_fault`).
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session

from apps.core.settings import Settings
from apps.orchestrator.engine.budgets import RunBudgets
from apps.orchestrator.engine.executor import NodeWork, Outcome, Succeeded
from apps.orchestrator.engine.outcomes import FailedAttempt, record_outcomes
from apps.orchestrator.engine.scheduling import (
    BATCH,
    EndedRun,
    claim_ready_nodes,
    finish_runs,
    promote_pending_nodes,
    skip_unstarted,
    start_queued_runs,
)
from apps.orchestrator.engine.statements import ACTIVE_RUNS, EVERY_RUN, RunScope
from apps.orchestrator.model.locks import lock_runs
from apps.orchestrator.model.models import RUNS, Node, Run
from apps.orchestrator.model.states import NodeStatus, RunStatus
from apps.orchestrator.model.transitions import insert_recorded_events, move_nodes, move_runs


@dataclass(slots=True)
class PassResult:
    """What one pass did: the attempts it claimed, the successes it could not record (their
    node ended meanwhile), the outcomes it left for the next pass, the failed attempts and the
    runs it ended, and whether it changed anything."""

    claimed: list[NodeWork] = field(default_factory=list)
    refused: list[Succeeded] = field(default_factory=list)
    postponed: list[Outcome] = field(default_factory=list)
    failed: list[FailedAttempt] = field(default_factory=list)
    ended: list[EndedRun] = field(default_factory=list)
    changed: bool = False

    def add(self, other: "PassResult") -> None:
        self.claimed += other.claimed
        self.refused += other.refused
        self.postponed += other.postponed
        self.failed += other.failed
        self.ended += other.ended
        self.changed |= other.changed


def run_pass(
    session: Session,
    outcomes: Sequence[Outcome],
    *,
    worker: str,
    slots: int,
    settings: Settings,
    start_queued: bool = True,
    scope: RunScope = EVERY_RUN,
    budgets: RunBudgets | None = None,
) -> PassResult:
    """One pass of the Manager over the runs of `scope`, in the caller's transaction;
    `start_queued` looks for queued runs too (a worker skips that while it only has its own
    outcomes to record). `outcomes` must belong to runs of `scope`. `budgets` is the worker's
    (see `budgets`), else the pass reads those of the runs it claims from."""
    result = PassResult()
    recorded = record_outcomes(session, outcomes, settings, result.refused)
    started = start_queued_runs(session, scope.where(RUNS.c.id)) if start_queued else []
    promoted = recorded.promoted
    promoted |= promote_pending_nodes(session, after=recorded.to_promote, runs=started)
    if slots > 0:
        result.claimed = claim_ready_nodes(
            session,
            worker=worker,
            slots=slots,
            per_run=settings.run_concurrency,
            lease_seconds=settings.lease_seconds,
            default_timeout=settings.llm_timeout_seconds,
            budgets=budgets or RunBudgets(),
            scope=scope,
        )
    # A run with a node just made ready or just claimed is not finished: no need to look (which
    # is why the claim comes first: while a run goes on, most passes claim from it).
    going_on = promoted | {work.run_id for work in result.claimed}
    result.failed = recorded.failed
    result.ended = finish_runs(session, recorded.runs - going_on)
    result.changed = bool(outcomes or started or promoted or result.ended or result.claimed)
    insert_recorded_events(session)
    return result


def runs_in_play(
    session: Session, outcomes: Sequence[Outcome], *, start_queued: bool, claiming: bool
) -> list[uuid.UUID]:
    """The runs a pass with these arguments would touch, oldest first: those of `outcomes`,
    the queued ones it would start and those with nodes it could claim."""
    ids = {outcome.work.run_id for outcome in outcomes}
    if start_queued:
        ids |= set(
            session.scalars(
                select(Run.id)
                .where(Run.status == RunStatus.QUEUED)
                .order_by(Run.created_at)
                .limit(BATCH)
            )
        )
    if claiming:
        ids |= set(session.scalars(_runs_with_ready_nodes(session.get_bind().dialect.name)))
    if not ids:
        return []
    created = dict(session.execute(select(Run.id, Run.created_at).where(Run.id.in_(ids))).all())
    return sorted(created, key=lambda run_id: created[run_id])


def _runs_with_ready_nodes(dialect: str) -> Select[uuid.UUID]:
    """The oldest active runs with ready nodes. SQLite has no index on the nodes' status
    (migration 0009): there each active run is looked up in the index on (run, status,
    position), oldest first, until BATCH have ready nodes."""
    if dialect == "sqlite":
        ready = select(Node.id).where(Node.run_id == Run.id, Node.status == NodeStatus.READY)
        return (
            select(Run.id)
            .where(Run.status.in_(ACTIVE_RUNS), exists(ready))
            .order_by(Run.created_at)
            .limit(BATCH)
        )
    return (
        select(Node.run_id)
        .join(Run, Run.id == Node.run_id)
        .where(Node.status == NodeStatus.READY, Run.status.in_(ACTIVE_RUNS))
        .group_by(Node.run_id, Run.created_at)
        .order_by(Run.created_at)
        .limit(BATCH)
    )


def fail_run_at_fault(session: Session, run_id: uuid.UUID, reason: str) -> bool:
    """Fail a run whose rows the worker cannot process: nothing more of it starts, its running
    attempts are failed (their results could not be recorded) and the run fails with `reason`.
    False when the run had ended meanwhile."""
    if run_id not in lock_runs(session, [run_id]):
        return False
    error = f"the worker could not process this run: {reason}"
    skip_unstarted(session, run_id, "the run failed")
    where = [Node.run_id == run_id]
    move_nodes(session, where, NodeStatus.RUNNING, NodeStatus.FAILED, cause="fault", error=error)
    for status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING):
        if move_runs(
            session, [Run.id == run_id], status, RunStatus.FAILED, cause="fault", error=error
        ):
            return True
    return False
