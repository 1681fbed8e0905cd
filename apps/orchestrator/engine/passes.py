"""A worker's pass: everything the Manager has to do, in one transaction."""

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from apps.core.settings import Settings
from apps.orchestrator.engine.executor import NodeWork, Outcome, Succeeded
from apps.orchestrator.engine.outcomes import record_outcomes
from apps.orchestrator.engine.scheduling import (
    claim_ready_nodes,
    finish_runs,
    promote_pending_nodes,
    start_queued_runs,
)


@dataclass(slots=True)
class PassResult:
    """What one pass did: the attempts it claimed, the successes it could not record (their
    node ended meanwhile) and whether it changed anything."""

    claimed: list[NodeWork] = field(default_factory=list)
    refused: list[Succeeded] = field(default_factory=list)
    changed: bool = False


def run_pass(
    session: Session,
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
    succeeded, runs = record_outcomes(session, outcomes, settings, result.refused)
    started = start_queued_runs(session) if start_queued else []
    promoted = promote_pending_nodes(session, after=succeeded, runs=started)
    # A run with a node just made ready is not finished: no need to look.
    finished = finish_runs(session, runs - promoted)
    if slots > 0:
        result.claimed = claim_ready_nodes(
            session,
            worker=worker,
            slots=slots,
            per_run=settings.run_concurrency,
            lease_seconds=settings.lease_seconds,
            default_timeout=settings.llm_timeout_seconds,
        )
    result.changed = bool(outcomes or started or promoted or finished or result.claimed)
    return result
