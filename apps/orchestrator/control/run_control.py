"""What operators do to whole runs: cancel and resume. Decisions at gates are in `decisions`.

Each function works in the caller's transaction, locks the run first (see `locks`) and writes its
events there. Cancel is two steps: `run.cancel_requested` at once, and `run.cancelled` once no
attempt of the run is in flight any more (written here when none is, else by the worker that
records the last one: whatever that attempt answered, the run is cancelled).
"""

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from apps.core.errors import Conflict
from apps.orchestrator.engine import scheduling
from apps.orchestrator.engine.gates import close_gates
from apps.orchestrator.engine.outcomes import budget_problem
from apps.orchestrator.model.locks import lock_run
from apps.orchestrator.model.models import Node, Run, utcnow
from apps.orchestrator.model.states import (
    NODE_RERUNNABLE,
    RUN_TERMINAL,
    NodeStatus,
    RunStatus,
    check_run_resume,
)
from apps.orchestrator.model.transitions import move_nodes, move_run, record_event
from apps.orchestrator.reading.runs import get_run_in


def request_cancel(session: Session, run_id: uuid.UUID, by: str) -> dict[str, Any]:
    """Ask for a run to stop: nothing starts any more, its waiting nodes and gates are
    cancelled, and the run is cancelled once no attempt of it is in flight; the run after."""
    status, requested = lock_run(session, run_id)
    if status in RUN_TERMINAL:
        raise Conflict(f"run is {status}; only a run that has not ended can be cancelled")
    if requested is None:
        session.execute(update(Run).where(Run.id == run_id).values(cancel_requested_at=utcnow()))
        record_event(session, run_id, "run.cancel_requested", data={"by": by})
    waiting = (NodeStatus.PENDING, NodeStatus.READY, NodeStatus.WAITING_APPROVAL)
    _move_run_nodes(session, run_id, waiting, NodeStatus.CANCELLED, cause="cancel", by=by)
    close_gates(session, run_id, "cancel")
    if status is RunStatus.QUEUED:
        move_run(session, run_id, status, RunStatus.CANCELLED, cause="cancel")
    else:
        scheduling.finish_runs(session, [run_id])
    return get_run_in(session, run_id)


def resume(session: Session, run_id: uuid.UUID, by: str) -> dict[str, Any]:
    """Continue a failed or cancelled run: its succeeded nodes and their artifacts are kept,
    the others run again (their attempt counts go on); the run after. `Conflict` when its next
    call would pass its budget: resumed, it would spend past it again before it stopped."""
    status, _ = lock_run(session, run_id)
    check_run_resume(status)
    problem = _budget_spent(session, run_id)
    if problem is not None:
        raise Conflict(f"the run's next call would pass its budget ({problem}); not resumed")
    move_run(session, run_id, status, RunStatus.RUNNING, cause="operator", data={"by": by})
    rerun = sorted(NODE_RERUNNABLE)
    _move_run_nodes(session, run_id, rerun, NodeStatus.PENDING, cause="resume", by=by)
    scheduling.promote_pending_nodes(session, runs=[run_id])
    scheduling.finish_runs(session, [run_id])
    return get_run_in(session, run_id)


def _budget_spent(session: Session, run_id: uuid.UUID) -> str | None:
    """Why the run's next call would pass its budget, judged as a worker does; None if it would
    not, or it has none."""
    budget, tokens, cost = session.execute(
        select(Run.task_spec["budget"], Run.total_tokens, Run.cost).where(Run.id == run_id)
    ).one()
    return budget_problem(session, run_id, budget, tokens, cost) if budget else None


def _move_run_nodes(
    session: Session,
    run_id: uuid.UUID,
    statuses: Iterable[NodeStatus],
    target: NodeStatus,
    *,
    cause: str,
    by: str,
) -> None:
    """Move the run's nodes in each of `statuses` to `target`, for what `by` asked."""
    for status in statuses:
        move_nodes(session, [Node.run_id == run_id], status, target, cause=cause, data={"by": by})
