"""Operator controls on a run: decisions at its gates, cancel and resume.

Each answers once its change is committed; the worker in this process is woken after the
response, and workers elsewhere see the change on their next look (within a second).
"""

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Path, Request, Response

from apps.api.auth import OperatorCaller, forbidden_below
from apps.api.dependencies import ArtifactStore, DbTransactions
from apps.api.responses import errors, located
from apps.api.routing import ProtectedRoute
from apps.core.database import Transactions
from apps.orchestrator.control import decisions, run_control
from apps.orchestrator.engine.gates import count_gate_decision
from apps.orchestrator.infra.storage import base as artifact_store
from apps.orchestrator.model.models import KeyRole
from apps.wire.schemas import ApproveRequest, Gate, RejectRequest, Run

router = APIRouter(tags=["control"], route_class=ProtectedRoute)

RunId = Annotated[uuid.UUID, Path(description="Run id.")]
# An approval may carry the gated artifact's new content.
MAX_APPROVAL_BYTES = 4 * 1024 * 1024
_DECISION_ERRORS = {
    **forbidden_below(KeyRole.OPERATOR),
    **errors(
        404,
        409,
        503,
        described={
            404: "No such run, or `node_id` is not a node of it.",
            409: "No gate waits on that node (`detail` gives its state: decided, by whom, "
            "when), or several wait and `node_id` is needed (`detail` lists them).",
            503: "The database or the artifact store, which an approval reads the gated "
            "artifact from or writes an edit to, did not answer; nothing was decided.",
        },
    ),
}
_RUN_LOCATION = located(202, "The run's URL, to follow it.")


def _wake_worker(request: Request, background: BackgroundTasks) -> None:
    if request.app.state.worker is not None:
        background.add_task(request.app.state.worker.wake)


async def _change_run(
    change: Callable[..., dict[str, Any]],
    run_id: uuid.UUID,
    by: str,
    transactions: Transactions,
    request: Request,
    response: Response,
    background: BackgroundTasks,
) -> Run:
    """Commit a change to a whole run (cancel, resume), locate the run, then wake the worker."""
    run = await transactions.run(change, run_id, by=by)
    response.headers["Location"] = f"/runs/{run_id}"
    _wake_worker(request, background)
    return Run.model_validate(run)


async def _decide(
    transactions: Transactions,
    store: artifact_store.ArtifactStore,
    request: Request,
    background: BackgroundTasks,
    run_id: uuid.UUID,
    node_id: uuid.UUID | None,
    decision: decisions.Decision,
) -> Gate:
    settings = request.app.state.settings
    gate = await decisions.decide_gate(transactions, store, settings, run_id, node_id, decision)
    count_gate_decision(gate)
    _wake_worker(request, background)
    return Gate.model_validate(gate)


@router.post("/runs/{run_id}/approve", responses=_DECISION_ERRORS, max_body_size=MAX_APPROVAL_BYTES)
async def approve_gate(
    caller: OperatorCaller,
    run_id: RunId,
    transactions: DbTransactions,
    store: ArtifactStore,
    request: Request,
    background: BackgroundTasks,
    body: ApproveRequest | None = None,
) -> Gate:
    """Release a waiting gate, optionally editing the gated artifact first; no body is no notes
    and no edit."""
    body = body or ApproveRequest()
    decision = decisions.Decision(approve=True, by=caller.name, notes=body.notes, patch=body.patch)
    return await _decide(transactions, store, request, background, run_id, body.node_id, decision)


@router.post("/runs/{run_id}/reject", responses=_DECISION_ERRORS)
async def reject_gate(
    caller: OperatorCaller,
    run_id: RunId,
    transactions: DbTransactions,
    store: ArtifactStore,
    request: Request,
    background: BackgroundTasks,
    body: RejectRequest | None = None,
) -> Gate:
    """Turn down a waiting gate: run the node again with the notes as feedback, or fail it; no
    body is a retry without notes."""
    body = body or RejectRequest()
    decision = decisions.Decision(
        approve=False, by=caller.name, notes=body.notes, action=body.action
    )
    return await _decide(transactions, store, request, background, run_id, body.node_id, decision)


@router.post(
    "/runs/{run_id}/cancel",
    status_code=202,
    responses={
        **_RUN_LOCATION,
        **forbidden_below(KeyRole.OPERATOR),
        **errors(
            404,
            409,
            described={404: "No such run.", 409: "The run has already ended; `detail` says how."},
        ),
    },
)
async def cancel_run(
    caller: OperatorCaller,
    run_id: RunId,
    transactions: DbTransactions,
    request: Request,
    response: Response,
    background: BackgroundTasks,
) -> Run:
    """Stop a run: nothing starts any more, and its calls in flight are cancelled. The run is
    `cancelled` once they have stopped (`run.cancelled`); until then it shows
    `cancel_requested_at`."""
    return await _change_run(
        run_control.request_cancel, run_id, caller.name, transactions, request, response, background
    )


@router.post(
    "/runs/{run_id}/resume",
    status_code=202,
    responses={
        **_RUN_LOCATION,
        **forbidden_below(KeyRole.OPERATOR),
        **errors(
            404,
            409,
            described={
                404: "No such run.",
                409: "The run is not failed or cancelled, or its next call would pass its"
                " budget; `detail` says which.",
            },
        ),
    },
)
async def resume_run(
    caller: OperatorCaller,
    run_id: RunId,
    transactions: DbTransactions,
    request: Request,
    response: Response,
    background: BackgroundTasks,
) -> Run:
    """Continue a failed or cancelled run from where it stopped: succeeded nodes and their
    artifacts are kept, the others run again. A run whose next call would pass its budget (one
    stopped by it) is not resumed."""
    return await _change_run(
        run_control.resume, run_id, caller.name, transactions, request, response, background
    )
