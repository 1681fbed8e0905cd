"""Recording what attempts ended with: a success's artifact, usage and budget check (or its gate,
when its output waits for approval), a failure's retry or end, and the stop of attempts in runs
being cancelled."""

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from apps.core.errors import InvalidTransition
from apps.core.settings import Settings
from apps.orchestrator.engine import statements
from apps.orchestrator.engine.executor import Failed, Outcome, Succeeded
from apps.orchestrator.engine.gates import Hold, gate_when, open_gates
from apps.orchestrator.engine.scheduling import (
    BUDGET_EXCEEDED,
    cancel_attempt,
    end_attempt,
    expand_report,
    skip_unstarted,
)
from apps.orchestrator.engine.statements import ACTIVE_RUNS
from apps.orchestrator.model.models import Artifact, Run, utcnow
from apps.orchestrator.model.states import NodeStatus
from apps.orchestrator.model.transitions import move_node, record_event, record_node_moves


def record_outcomes(
    session: Session,
    outcomes: Sequence[Outcome],
    settings: Settings,
    refused: list[Succeeded],
) -> tuple[list[uuid.UUID], set[uuid.UUID]]:
    """Record finished attempts; the nodes that succeeded and the runs they touched.

    Successes whose node is no longer running that attempt are appended to `refused`.
    """
    successes = [outcome for outcome in outcomes if isinstance(outcome, Succeeded)]
    held = [outcome for outcome in successes if gate_when(outcome.work.gate) == "after"]
    held_ids = {outcome.work.id for outcome in held}
    plain = [outcome for outcome in successes if outcome.work.id not in held_ids]
    recorded = _record_successes(session, plain, settings)
    recorded |= _hold_outputs(session, held)
    unrecorded = [outcome for outcome in successes if outcome.work.id not in recorded]
    failures = [outcome for outcome in outcomes if isinstance(outcome, Failed)]
    stopped = _stop_in_cancelled_runs(session, [*unrecorded, *failures])
    refused.extend(outcome for outcome in unrecorded if outcome.work.id not in stopped)
    for failure in failures:
        if failure.work.id not in stopped:
            end_attempt(
                session,
                failure.work,
                failure.message,
                retryable=failure.retryable,
                cause=failure.cause,
            )
    return list(recorded - held_ids), {outcome.work.run_id for outcome in outcomes}


def _hold_outputs(session: Session, held: Sequence[Succeeded]) -> set[uuid.UUID]:
    """Record outputs whose node waits for approval: the artifact, its usage and the gate."""
    holds, kept = [], []
    for outcome in held:
        try:
            move_node(
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
        statements.add_artifacts(session.connection(), [row])
        holds.append(Hold(outcome.work.id, outcome.work.run_id, outcome.work.gate or {}, row["id"]))
        kept.append(outcome)
    if kept:
        _add_usage(session, kept)
        open_gates(session, holds)
    return {outcome.work.id for outcome in kept}


def _stop_in_cancelled_runs(session: Session, outcomes: Sequence[Outcome]) -> set[uuid.UUID]:
    """Attempts that ended in runs being cancelled: their nodes are cancelled, whatever the
    attempt answered; the ids of those nodes."""
    if not outcomes:
        return set()
    cancelling = set(
        session.scalars(
            select(Run.id).where(
                Run.id.in_({outcome.work.run_id for outcome in outcomes}),
                Run.cancel_requested_at.is_not(None),
            )
        )
    )
    return {
        outcome.work.id
        for outcome in outcomes
        if outcome.work.run_id in cancelling and cancel_attempt(session, outcome.work)
    }


def _record_successes(
    session: Session, successes: Sequence[Succeeded], settings: Settings
) -> set[uuid.UUID]:
    if not successes:
        return set()
    connection = session.connection()
    attempts = [(outcome.work.id, outcome.work.attempt) for outcome in successes]
    moved = statements.mark_succeeded(connection, attempts)
    record_node_moves(session, moved, NodeStatus.RUNNING, NodeStatus.SUCCEEDED, cause="completed")
    recorded = {node.id for node in moved}
    kept = [outcome for outcome in successes if outcome.work.id in recorded]
    if kept:
        statements.add_artifacts(connection, [_artifact_row(session, o) for o in kept])
        _add_usage(session, kept)
    for outcome in kept:
        if outcome.outline is not None:
            work = outcome.work
            expand_report(session, work.run_id, work.id, work.run_title, outcome.outline, settings)
    return recorded


def _artifact_row(session: Session, outcome: Succeeded) -> dict[str, Any]:
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


def _add_usage(session: Session, successes: Sequence[Succeeded]) -> None:
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
    connection = session.connection()
    for run_id, (prompt, completion, cost) in totals.items():
        status, tokens, spent = statements.add_usage(connection, run_id, prompt, completion, cost)
        budget = budgets[run_id]
        if budget and status in ACTIVE_RUNS:
            _stop_if_over_budget(session, run_id, budget, tokens, spent)


def budget_problem(budget: dict[str, Any], tokens: int, cost: float, calls: int) -> str | None:
    """Why the run's next call would pass its budget (judged by its calls so far), or None."""
    max_tokens, max_cost = budget.get("max_tokens"), budget.get("max_cost")
    if max_tokens is not None and tokens + (tokens / calls if calls else 0) > max_tokens:
        return f"{BUDGET_EXCEEDED}: spent {tokens} of {max_tokens} tokens"
    if max_cost is not None and cost + (cost / calls if calls else 0) > max_cost:
        return f"{BUDGET_EXCEEDED}: spent ${cost:.6f} of ${max_cost:.6f}"
    return None


def _stop_if_over_budget(
    session: Session,
    run_id: uuid.UUID,
    budget: dict[str, Any],
    tokens: int,
    cost: float,
) -> None:
    calls = session.scalar(select(func.count()).where(Artifact.run_id == run_id))
    if budget_problem(budget, tokens, cost, calls or 0) is not None:
        # The run fails once its calls in flight have ended, saying what they all cost.
        skip_unstarted(session, run_id, BUDGET_EXCEEDED)
