"""Recording what attempts ended with: a success's artifact, usage and budget check (or its gate,
when its output waits for approval), a failure's retry or end, and the stop of attempts in runs
being cancelled."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import exists, func, select
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
    record_promotions,
    skip_unstarted,
)
from apps.orchestrator.engine.statements import ACTIVE_RUNS
from apps.orchestrator.model.locks import lock_runs_for_recording
from apps.orchestrator.model.models import Artifact, utcnow
from apps.orchestrator.model.prepared import connection_of
from apps.orchestrator.model.states import NodeStatus
from apps.orchestrator.model.transitions import move_node, record_event, record_node_moves


class FailedAttempt(NamedTuple):
    """A failed attempt recorded, and whether its node is to be retried (else it failed)."""

    failure: Failed
    retried: bool


@dataclass(slots=True)
class Recorded:
    """What `record_outcomes` did: the runs it touched, the nodes that succeeded whose
    dependents are still to be made ready (`promote_pending_nodes`), the runs whose nodes it
    made ready already, and the failed attempts it ended."""

    runs: set[uuid.UUID]
    to_promote: list[uuid.UUID] = field(default_factory=list)
    promoted: set[uuid.UUID] = field(default_factory=set)
    failed: list[FailedAttempt] = field(default_factory=list)


def record_outcomes(
    session: Session,
    outcomes: Sequence[Outcome],
    settings: Settings,
    refused: list[Succeeded],
) -> Recorded:
    """Record finished attempts (see `Recorded`).

    Their runs are locked first (see `locks`). Successes whose node is no longer running that
    attempt are appended to `refused`.
    """
    result = Recorded({outcome.work.run_id for outcome in outcomes})
    cancelling = lock_runs_for_recording(session, result.runs)
    going_on = [outcome for outcome in outcomes if outcome.work.run_id not in cancelling]
    _stop_in_cancelled_runs(
        session, [outcome for outcome in outcomes if outcome.work.run_id in cancelling], refused
    )
    successes = [outcome for outcome in going_on if isinstance(outcome, Succeeded)]
    held = [outcome for outcome in successes if gate_when(outcome.work.gate) == "after"]
    held_ids = {outcome.work.id for outcome in held}
    plain = [outcome for outcome in successes if outcome.work.id not in held_ids]
    failures = [outcome for outcome in going_on if isinstance(outcome, Failed)]
    # Dependents are made ready with the successes only where nothing else this pass records
    # could stop them (a failure, a budget, a report's plan growing): else after all of it.
    promote = not failures and all(_ends_plainly(outcome) for outcome in plain)
    recorded = _record_successes(session, plain, settings, result if promote else None)
    recorded |= _hold_outputs(session, held)
    refused.extend(outcome for outcome in successes if outcome.work.id not in recorded)
    for failure in failures:
        moved = end_attempt(
            session, failure.work, failure.message, retryable=failure.retryable, cause=failure.cause
        )
        if moved is not None:
            result.failed.append(FailedAttempt(failure, retried=moved is NodeStatus.READY))
    if not promote:
        result.to_promote = list(recorded - held_ids)
    return result


def _ends_plainly(outcome: Succeeded) -> bool:
    """Whether recording `outcome` does nothing after its node succeeds: no budget to check,
    no outline to plan from."""
    return not outcome.work.budget and outcome.outline is None


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
        statements.add_artifacts(connection_of(session), [row])
        holds.append(Hold(outcome.work.id, outcome.work.run_id, outcome.work.gate or {}, row["id"]))
        kept.append(outcome)
    if kept:
        _add_usage(session, kept)
        open_gates(session, holds)
    return {outcome.work.id for outcome in kept}


def _stop_in_cancelled_runs(
    session: Session, outcomes: Sequence[Outcome], refused: list[Succeeded]
) -> None:
    """Attempts that ended in runs being cancelled: their nodes are cancelled, whatever the
    attempt answered. An output is recorded all the same, with what its call cost, but never
    gated and never planned from: the call was made and paid for."""
    stopped = []
    for outcome in outcomes:
        if cancel_attempt(session, outcome.work):
            stopped.append(outcome)
        elif isinstance(outcome, Succeeded):
            refused.append(outcome)
    outputs = [outcome for outcome in stopped if isinstance(outcome, Succeeded)]
    if outputs:
        rows = [_artifact_row(session, outcome) for outcome in outputs]
        statements.add_artifacts(connection_of(session), rows)
        _add_usage(session, outputs)


def _record_successes(
    session: Session,
    successes: Sequence[Succeeded],
    settings: Settings,
    promoting: Recorded | None,
) -> set[uuid.UUID]:
    """Record `successes`; the nodes that succeeded. With `promoting`, their dependents are
    made ready too where the database can do it in the same statement, and said there."""
    if not successes:
        return set()
    outputs = {outcome.work.id: _output(outcome) for outcome in successes}
    recorded = statements.record_successes(
        connection_of(session), list(outputs.values()), promote=promoting is not None
    )
    moved = recorded.succeeded
    record_node_moves(session, moved, NodeStatus.RUNNING, NodeStatus.SUCCEEDED, cause="completed")
    ids = {node.id for node in moved}
    kept = [outcome for outcome in successes if outcome.work.id in ids]
    for outcome in kept:
        _record_artifact_created(session, outputs[outcome.work.id].artifact)
    if promoting is not None:
        if recorded.promoted is None:
            promoting.to_promote = list(ids)
        else:
            promoting.promoted = record_promotions(session, recorded.promoted)
    _check_budgets(session, kept, recorded.usage)
    for outcome in kept:
        if outcome.outline is not None:
            work = outcome.work
            expand_report(session, work.run_id, work.id, work.run_title, outcome.outline, settings)
    return ids


def output_recorded(session: Session, outcome: Succeeded) -> bool:
    """Whether an artifact refers to the files of `outcome`'s output (a pass whose commit
    seemed to fail may have recorded it all the same)."""
    recorded = select(Artifact.id).where(
        Artifact.node_id == outcome.work.id, Artifact.storage_key == outcome.output.storage_key
    )
    return bool(session.scalar(select(exists(recorded))))


def _artifact_row(session: Session, outcome: Succeeded) -> dict[str, Any]:
    """The artifact row of a recorded success, with its `artifact.created` event."""
    row = _output(outcome).artifact
    _record_artifact_created(session, row)
    return row


def _output(outcome: Succeeded) -> statements.Output:
    """What recording a success writes: its artifact's row and its call's usage."""
    output = outcome.output
    artifact = {
        "id": uuid.uuid4(),
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
    return statements.Output(
        outcome.work.attempt,
        artifact,
        output.prompt_tokens,
        output.completion_tokens,
        output.cost,
    )


def _record_artifact_created(session: Session, artifact: dict[str, Any]) -> None:
    data = {"artifact_id": str(artifact["id"]), "name": artifact["name"], "size": artifact["size"]}
    run_id, node_id = artifact["run_id"], artifact["node_id"]
    record_event(session, run_id, "artifact.created", node_id=node_id, data=data)


def _add_usage(session: Session, successes: Sequence[Succeeded]) -> None:
    """Add the calls' tokens and cost to their runs, and stop a run its next call would take
    past its budget."""
    connection = connection_of(session)
    totals = statements.usage_totals(_output(outcome) for outcome in successes)
    usage = {
        run_id: statements.add_usage(connection, run_id, *run_totals)
        for run_id, run_totals in totals.items()
    }
    _check_budgets(session, successes, usage)


def _check_budgets(
    session: Session, successes: Sequence[Succeeded], usage: dict[uuid.UUID, statements.Usage]
) -> None:
    """Stop the runs of `successes` that their next call would take past their budget, judged
    by their `usage` now."""
    budgets = {outcome.work.run_id: outcome.work.budget for outcome in successes}
    for run_id, budget in budgets.items():
        now = usage.get(run_id)
        if not budget or now is None or now.status not in ACTIVE_RUNS:
            continue
        if budget_problem(session, run_id, budget, now.total_tokens, now.cost) is not None:
            # The run fails once its calls in flight have ended, saying what they all cost.
            skip_unstarted(session, run_id, BUDGET_EXCEEDED)


def budget_problem(
    session: Session, run_id: uuid.UUID, budget: dict[str, Any], tokens: int, cost: float
) -> str | None:
    """Why the run's next call would pass its budget, now that it has spent `tokens` and
    `cost`, or None. The next call is judged to cost what its calls so far did on average."""
    calls = session.scalar(select(func.count()).where(Artifact.run_id == run_id)) or 0
    max_tokens, max_cost = budget.get("max_tokens"), budget.get("max_cost")
    if max_tokens is not None and tokens + (tokens / calls if calls else 0) > max_tokens:
        return f"{BUDGET_EXCEEDED}: spent {tokens} of {max_tokens} tokens"
    if max_cost is not None and cost + (cost / calls if calls else 0) > max_cost:
        return f"{BUDGET_EXCEEDED}: spent ${cost:.6f} of ${max_cost:.6f}"
    return None
