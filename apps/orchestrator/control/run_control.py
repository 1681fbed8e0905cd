"""What operators (and gate timeouts) do to runs: decide at gates, cancel, resume.

Each function works in the caller's transaction and writes its events there. A decision claims
its gate with a conditional update, so of two decisions racing on one gate exactly one wins and
the other is refused with the gate's state. Cancel is two steps: `run.cancel_requested` at once,
and `run.cancelled` once no attempt of the run is in flight any more (written here when none is,
else by the worker that stops the last one).
"""

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from apps.core.errors import Conflict, NotFound, Unprocessable
from apps.core.settings import Settings
from apps.orchestrator.engine import scheduling
from apps.orchestrator.engine.gates import close_gates
from apps.orchestrator.infra.storage.base import ArtifactStore, encode_sidecar, sidecar_key
from apps.orchestrator.model.models import GATES, Artifact, Node, Run, utcnow
from apps.orchestrator.model.states import (
    NODE_RERUNNABLE,
    RUN_TERMINAL,
    GateStatus,
    NodeStatus,
    RunStatus,
    check_gate_decision,
    check_run_resume,
)
from apps.orchestrator.model.transitions import move_nodes, move_run, move_runs, record_event
from apps.orchestrator.plans.planning import OUTLINE_KEY, InvalidOutline, parse_outline
from apps.orchestrator.reading.gates import get_gate, pending_gates

Action = Literal["retry", "fail"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What decides a gate: who (a key's name, or "timeout"), and what they said."""

    approve: bool
    by: str
    notes: str | None = None
    # Approve only: the gated artifact's new content (text), or a JSON merge patch (object).
    patch: str | dict[str, Any] | None = None
    # Reject only: run the node again with the notes as feedback, or fail it.
    action: Action = "retry"
    automatic: bool = False


def decide(
    session: Session,
    store: ArtifactStore,
    settings: Settings,
    run_id: uuid.UUID,
    node_id: uuid.UUID | None,
    decision: Decision,
) -> dict[str, Any]:
    """Decide the gate waiting on `node_id` (or the run's only waiting gate); the gate after."""
    gate = _waiting_gate(session, run_id, node_id)
    if decision.patch is not None and gate.artifact_id is None:
        raise Unprocessable("patch edits a gated output; this gate is before its node starts")
    target = GateStatus.APPROVED if decision.approve else GateStatus.REJECTED
    check_gate_decision(GateStatus.PENDING, target)
    _claim_gate(session, gate, target, decision)
    if decision.approve:
        _approve(session, store, settings, gate, decision)
    else:
        _reject(session, gate, decision)
    _release_run(session, run_id)
    scheduling.finish_runs(session, [run_id])
    return get_gate(session, gate.id)


def _waiting_gate(session: Session, run_id: uuid.UUID, node_id: uuid.UUID | None) -> Any:
    status = session.scalar(select(Run.status).where(Run.id == run_id))
    if status is None:
        raise NotFound(f"run {run_id} not found")
    waiting = pending_gates(session, run_id, node_id)
    if len(waiting) == 1:
        return waiting[0]
    if waiting:
        keys = ", ".join(f"{gate.node_key} ({gate.node_id})" for gate in waiting)
        raise Conflict(f"several gates wait in this run; say which with node_id: {keys}")
    if node_id is None:
        raise Conflict(f"no gate waits in this run; the run is {status}")
    raise Conflict(_gate_state(session, run_id, node_id))


def _gate_state(session: Session, run_id: uuid.UUID, node_id: uuid.UUID) -> str:
    """Why no gate waits on `node_id`: its last gate's decision, or that it has none."""
    last = (
        session.execute(
            select(GATES.c.status, GATES.c.decided_by, GATES.c.decided_at)
            .where(GATES.c.run_id == run_id, GATES.c.node_id == node_id)
            .order_by(GATES.c.opened_at.desc())
            .limit(1)
        )
    ).first()
    if last is None:
        return f"node {node_id} of this run has no gate waiting"
    by = f" by {last.decided_by}" if last.decided_by else ""
    return f"the gate of node {node_id} is already {last.status}{by} at {last.decided_at}"


def _claim_gate(session: Session, gate: Any, target: GateStatus, decision: Decision) -> None:
    """Close the gate with the decision, unless another decision closed it first."""
    action = "approve" if decision.approve else decision.action
    result = session.connection().execute(
        update(GATES)
        .where(GATES.c.id == gate.id, GATES.c.status == GateStatus.PENDING)
        .values(
            status=target,
            decided_at=utcnow(),
            decided_by=decision.by,
            automatic=decision.automatic,
            action=action,
            notes=decision.notes,
        )
    )
    if result.rowcount != 1:
        raise Conflict(_gate_state(session, gate.run_id, gate.node_id))
    data = {
        "gate_id": str(gate.id),
        "by": decision.by,
        "automatic": decision.automatic,
        "action": action,
        **({"notes": decision.notes} if decision.notes else {}),
    }
    record_event(session, gate.run_id, f"gate.{target}", node_id=gate.node_id, data=data)


def _approve(
    session: Session,
    store: ArtifactStore,
    settings: Settings,
    gate: Any,
    decision: Decision,
) -> None:
    where = [Node.id == gate.node_id]
    cause = "approved"
    if gate.when == "before":
        move_nodes(session, where, NodeStatus.WAITING_APPROVAL, NodeStatus.READY, cause=cause)
        return
    if decision.patch is not None:
        _patch_artifact(session, store, gate, decision)
    move_nodes(session, where, NodeStatus.WAITING_APPROVAL, NodeStatus.SUCCEEDED, cause=cause)
    if gate.node_key == OUTLINE_KEY:
        _expand_outline(session, store, settings, gate)
    scheduling.promote_pending_nodes(session, after=[gate.node_id])


def _reject(session: Session, gate: Any, decision: Decision) -> None:
    where = [Node.id == gate.node_id]
    if decision.action == "retry" and gate.when == "after":
        feedback = f"\n\nReviewer feedback on your previous answer: {decision.notes or 'redo it'}"
        move_nodes(
            session,
            where,
            NodeStatus.WAITING_APPROVAL,
            NodeStatus.READY,
            cause="rejected",
            prompt=Node.prompt + feedback,
            next_attempt_at=None,
        )
        return
    reason = f"node {gate.node_key!r} was rejected by {decision.by}"
    if decision.notes:
        reason += f": {decision.notes}"
    move_nodes(
        session,
        where,
        NodeStatus.WAITING_APPROVAL,
        NodeStatus.FAILED,
        cause="rejected",
        error=reason,
    )
    scheduling.skip_unstarted(session, gate.run_id, f"node {gate.node_key!r} was rejected")


def _release_run(session: Session, run_id: uuid.UUID) -> None:
    """A waiting run with no gate waiting any more goes on running."""
    if not pending_gates(session, run_id):
        move_runs(session, [Run.id == run_id], RunStatus.WAITING, RunStatus.RUNNING, cause="gates")


def _patch_artifact(session: Session, store: ArtifactStore, gate: Any, decision: Decision) -> None:
    """Store the edited artifact as a new artifact of the node, which its dependents read; the
    original stays, and the copy's sidecar keeps the original call's figures."""
    original = session.get(Artifact, gate.artifact_id)
    if original is None:
        raise Conflict("the gated artifact no longer exists")
    content = store.read(original.storage_key)
    edited = _apply_patch(original.media_type, content, decision.patch)
    storage_key = f"{original.storage_key.rsplit('/', 1)[0]}/edited-{gate.id.hex}/{original.name}"
    store.write(storage_key, edited)
    store.write(sidecar_key(storage_key), encode_sidecar(original.sidecar))
    artifact = Artifact(
        id=uuid.uuid4(),
        run_id=original.run_id,
        node_id=original.node_id,
        name=original.name,
        media_type=original.media_type,
        size=len(edited),
        sha256=hashlib.sha256(edited).hexdigest(),
        storage_key=storage_key,
        sidecar=original.sidecar,
        created_at=utcnow(),
    )
    session.add(artifact)
    session.flush()
    data = {
        "artifact_id": str(artifact.id),
        "edited_from": str(original.id),
        "by": decision.by,
        "size": artifact.size,
    }
    record_event(session, gate.run_id, "artifact.edited", node_id=gate.node_id, data=data)


def _apply_patch(media_type: str, content: bytes, patch: str | dict[str, Any] | None) -> bytes:
    if isinstance(patch, str):
        return patch.encode()
    if media_type != "application/json":
        raise Unprocessable("a JSON merge patch applies to a JSON artifact; send text instead")
    try:
        document = json.loads(content)
    except ValueError:
        raise Unprocessable("the gated artifact is not valid JSON") from None
    return json.dumps(merge_patch(document, patch)).encode()


def merge_patch(target: Any, patch: Any) -> Any:
    """`target` with the JSON merge patch `patch` applied (RFC 7396)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _expand_outline(session: Session, store: ArtifactStore, settings: Settings, gate: Any) -> None:
    """A report's outline was approved: plan its sections from the outline as approved."""
    storage_key, title = (
        session.execute(
            select(Artifact.storage_key, Run.title)
            .join(Run, Run.id == Artifact.run_id)
            .where(Artifact.node_id == gate.node_id)
            .order_by(Artifact.created_at.desc())
            .limit(1)
        )
    ).one()
    try:
        outline = parse_outline(store.read(storage_key).decode())
    except InvalidOutline as error:
        raise Unprocessable(f"the approved outline is invalid: {error}") from None
    scheduling.expand_report(session, gate.run_id, gate.node_id, title, outline, settings)


def decide_expired_gates(
    session: Session, store: ArtifactStore, settings: Settings
) -> list[dict[str, Any]]:
    """Carry out what their policy says for the gates past their `expires_at`; the gates
    decided, as the inbox shows them."""
    expired = (
        session.execute(
            select(GATES.c.run_id, GATES.c.node_id, GATES.c.on_timeout)
            .where(GATES.c.status == GateStatus.PENDING, GATES.c.expires_at < utcnow())
            .order_by(GATES.c.expires_at)
            .limit(scheduling.BATCH)
        )
    ).all()
    decided = []
    for run_id, node_id, on_timeout in expired:
        decision = Decision(
            approve=on_timeout == "approve",
            by="timeout",
            notes="the gate timed out",
            action="fail" if on_timeout == "fail" else "retry",
            automatic=True,
        )
        decided.append(decide(session, store, settings, run_id, node_id, decision))
    return decided


def request_cancel(session: Session, run_id: uuid.UUID, by: str) -> None:
    """Ask for a run to stop: nothing starts any more, its waiting nodes and gates are
    cancelled, and the run is cancelled once no attempt of it is in flight."""
    status, requested = _run_state(session, run_id)
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


def resume(session: Session, run_id: uuid.UUID, by: str) -> None:
    """Continue a failed or cancelled run: its succeeded nodes and their artifacts are kept,
    the others run again (their attempt counts go on)."""
    status, _ = _run_state(session, run_id)
    check_run_resume(status)
    move_run(session, run_id, status, RunStatus.RUNNING, cause="operator", data={"by": by})
    rerun = sorted(NODE_RERUNNABLE)
    _move_run_nodes(session, run_id, rerun, NodeStatus.PENDING, cause="resume", by=by)
    scheduling.promote_pending_nodes(session, runs=[run_id])
    scheduling.finish_runs(session, [run_id])


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


def _run_state(session: Session, run_id: uuid.UUID) -> tuple[RunStatus, Any]:
    row = (
        session.execute(select(Run.status, Run.cancel_requested_at).where(Run.id == run_id))
    ).first()
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return row.status, row.cancel_requested_at
