"""Decisions at gates, by operators and by timeouts.

`decide_gate` does a decision's store I/O (reading the gated artifact, writing an edit) in a
thread, before its transaction and outside it: a slow store then holds neither the event loop nor
a database transaction (nor, on SQLite, the one writer). An edit is written under keys of its own
before the transaction that records it; if that transaction does not commit, the files are
removed.

The transaction locks the run first (see `locks`), then claims the gate with a conditional
update: of two decisions racing on one gate exactly one wins and the other is refused with the
gate's state, and a decision racing a cancel or a timeout on the same run waits for it.
"""

import asyncio
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from apps.core.database import Transactions
from apps.core.errors import Conflict, NotFound, Unprocessable
from apps.core.settings import Settings
from apps.orchestrator.control.api_keys import TIMEOUT_DECIDER
from apps.orchestrator.control.edits import Edit, apply_patch, discard, edit_of, write_edit
from apps.orchestrator.engine import scheduling
from apps.orchestrator.infra.storage.base import ArtifactStore
from apps.orchestrator.model.clock import database_time
from apps.orchestrator.model.locks import lock_run
from apps.orchestrator.model.models import GATES, Artifact, Node, Run, utcnow
from apps.orchestrator.model.states import GateStatus, NodeStatus, RunStatus, check_gate_decision
from apps.orchestrator.model.transitions import move_nodes, move_runs, record_event
from apps.orchestrator.plans.planning import OUTLINE_KEY, InvalidOutline, Outline, parse_outline
from apps.orchestrator.reading.gates import get_gate, pending_gates
from apps.wire.timestamps import utc_text

logger = logging.getLogger(__name__)

Action = Literal["retry", "fail"]


class GateDecided(Conflict):
    """The gate meant is no longer waiting: another decision (or a cancel) closed it first."""


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
    # The gate meant, when the decider knows it (a timeout): a later gate of the same node is
    # not decided by it.
    gate_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Approval:
    """What an approval read and wrote in the store before its transaction: the gate it is
    for, the edit it records, and the outline it plans from (a report's outline gate)."""

    gate_id: uuid.UUID
    edit: Edit | None = None
    outline: Outline | None = None


async def decide_gate(
    transactions: Transactions,
    store: ArtifactStore,
    settings: Settings,
    run_id: uuid.UUID,
    node_id: uuid.UUID | None,
    decision: Decision,
) -> dict[str, Any]:
    """Decide the gate waiting on `node_id` (or the run's only waiting gate); the gate after."""
    approval = None
    if decision.approve:
        gate = await transactions.run(_gate_to_decide, run_id, node_id, decision)
        approval = await _prepare_approval(store, gate, decision)
    try:
        return await transactions.run(_decide, settings, run_id, node_id, decision, approval)
    except BaseException:
        if approval is not None and approval.edit is not None:
            await _discard_unless_recorded(transactions, store, approval.edit)
        raise


_GATED_CONTENT_MISSING = (
    "the gated artifact's content is missing from the artifact store; "
    "reject the gate with retry to run its node again"
)


class GateToDecide(NamedTuple):
    """The gate a decision is about (as `get_gate` shows it) and its artifact, if any."""

    gate: Any
    artifact: Artifact | None


def _gate_to_decide(
    session: Session, run_id: uuid.UUID, node_id: uuid.UUID | None, decision: Decision
) -> GateToDecide:
    """The gate a decision is about, with its artifact, as they are now."""
    gate = _waiting_gate(session, run_id, node_id, decision.gate_id)
    if decision.patch is not None and gate.artifact_id is None:
        raise Unprocessable("patch edits a gated output; this gate is before its node starts")
    artifact = None
    if gate.artifact_id is not None:
        artifact = session.get(Artifact, gate.artifact_id)
        if artifact is None:
            raise Conflict("the gated artifact no longer exists")
    return GateToDecide(gate, artifact)


async def _prepare_approval(
    store: ArtifactStore, found: GateToDecide, decision: Decision
) -> Approval:
    """Read what the approval plans from and write its edit, in threads; see `Approval`."""
    gate, artifact = found
    outline_gate = gate.node_key == OUTLINE_KEY and gate.when == "after"
    if artifact is None:
        return Approval(gate.id)
    if decision.patch is None and not outline_gate:
        # Approved as it is, the output is read by the nodes after it: they could only fail.
        if not await asyncio.to_thread(store.exists, artifact.storage_key):
            raise Conflict(_GATED_CONTENT_MISSING)
        return Approval(gate.id)
    content = await asyncio.to_thread(_read_gated, store, artifact.storage_key)
    edit = None
    if decision.patch is not None:
        content = apply_patch(artifact.media_type, content, decision.patch)
    outline = _read_outline(content) if outline_gate else None
    if decision.patch is not None:
        edit = edit_of(artifact, content)
        await write_edit(store, edit, content)
    return Approval(gate.id, edit, outline)


def _read_gated(store: ArtifactStore, storage_key: str) -> bytes:
    try:
        return store.read(storage_key)
    except NotFound:
        raise Conflict(_GATED_CONTENT_MISSING) from None


def _read_outline(content: bytes) -> Outline:
    try:
        return parse_outline(content.decode())
    except (InvalidOutline, UnicodeDecodeError) as error:
        raise Unprocessable(f"the approved outline is invalid: {error}") from None


async def _discard_unless_recorded(
    transactions: Transactions, store: ArtifactStore, edit: Edit
) -> None:
    """Remove an edit's files when the transaction meant to record it did not commit. When the
    database cannot say, the files stay: an unused file costs less than a missing one."""
    try:
        recorded = await transactions.run(_artifact_exists, edit.artifact["id"])
    except Exception as error:
        key = edit.artifact["storage_key"]
        logger.warning("kept the files of %s, unsure the edit was recorded: %s", key, error)
        return
    if not recorded:
        await discard(store, edit)


def _artifact_exists(session: Session, artifact_id: uuid.UUID) -> bool:
    return bool(session.scalar(select(exists().where(Artifact.id == artifact_id))))


def _decide(
    session: Session,
    settings: Settings,
    run_id: uuid.UUID,
    node_id: uuid.UUID | None,
    decision: Decision,
    approval: Approval | None,
) -> dict[str, Any]:
    lock_run(session, run_id)
    gate_id = approval.gate_id if approval is not None else decision.gate_id
    gate = _waiting_gate(session, run_id, node_id, gate_id)
    decision = _within_attempts(session, gate, decision)
    target = GateStatus.APPROVED if decision.approve else GateStatus.REJECTED
    check_gate_decision(GateStatus.PENDING, target)
    _claim_gate(session, gate, target, decision)
    if approval is not None:
        _approve(session, settings, gate, decision, approval)
    else:
        _reject(session, gate, decision)
    _release_run(session, run_id)
    scheduling.finish_runs(session, [run_id])
    return get_gate(session, gate.id)


def _within_attempts(session: Session, gate: Any, decision: Decision) -> Decision:
    """`decision`, but a timeout's rejection of a node that has used all its attempts fails it:
    retried, the node would be called again and time out again, without end. A person's
    rejection retries whatever the count: it is theirs to stop."""
    if decision.approve or not decision.automatic or decision.action != "retry":
        return decision
    attempt, max_attempts = session.execute(
        select(Node.attempt, Node.max_attempts).where(Node.id == gate.node_id)
    ).one()
    if attempt < max_attempts:
        return decision
    notes = f"{decision.notes}, and its node has used its {max_attempts} attempt(s)"
    return replace(decision, action="fail", notes=notes)


def _waiting_gate(
    session: Session, run_id: uuid.UUID, node_id: uuid.UUID | None, gate_id: uuid.UUID | None
) -> Any:
    """The pending gate of the run: `gate_id` if given, else the one on `node_id` (or the
    run's only one); `Conflict` with what happened to it when there is none."""
    status = session.scalar(select(Run.status).where(Run.id == run_id))
    if status is None:
        raise NotFound(f"run {run_id} not found")
    waiting = pending_gates(session, run_id, node_id)
    if gate_id is not None:
        waiting = [gate for gate in waiting if gate.id == gate_id]
    if len(waiting) == 1:
        return waiting[0]
    if waiting:
        keys = ", ".join(f"{gate.node_key} ({gate.node_id})" for gate in waiting)
        raise Conflict(f"several gates wait in this run; say which with node_id: {keys}")
    if gate_id is not None:
        raise _decided(session, GATES.c.id == gate_id) or Conflict("no such gate in this run")
    if node_id is None:
        # The common case of two operators deciding at once: say how the gate was decided.
        decided = _decided(session, GATES.c.run_id == run_id)
        raise decided or Conflict(f"no gate waits in this run; the run is {status}")
    if not session.scalar(select(exists().where(Node.id == node_id, Node.run_id == run_id))):
        raise NotFound(f"node {node_id} not found in run {run_id}")
    where = (GATES.c.node_id == node_id, GATES.c.run_id == run_id)
    raise _decided(session, *where) or Conflict(f"node {node_id} of this run has no gate waiting")


def _decided(session: Session, *where: Any) -> GateDecided | None:
    """What decided the last gate matching `where`, or None when there is none."""
    last = (
        session.execute(
            select(GATES.c.node_id, GATES.c.status, GATES.c.decided_by, GATES.c.decided_at)
            .where(*where)
            .order_by(GATES.c.opened_at.desc())
            .limit(1)
        )
    ).first()
    if last is None:
        return None
    by = f" by {last.decided_by}" if last.decided_by else ""
    # As the API writes its timestamps: ISO 8601 in UTC, "Z".
    at = f" at {utc_text(last.decided_at)}" if last.decided_at else ""
    state = f"the gate of node {last.node_id} is already {last.status}{by}{at}"
    return GateDecided(state)


def _claim_gate(session: Session, gate: Any, target: GateStatus, decision: Decision) -> None:
    """Close the gate with the decision, unless another decision closed it first."""
    action = "approve" if decision.approve else decision.action
    dialect = session.get_bind().dialect.name
    result = session.connection().execute(
        update(GATES)
        .where(GATES.c.id == gate.id, GATES.c.status == GateStatus.PENDING)
        .values(
            status=target,
            decided_at=database_time(dialect),
            decided_by=decision.by,
            automatic=decision.automatic,
            action=action,
            notes=decision.notes,
        )
    )
    if result.rowcount != 1:
        raise _decided(session, GATES.c.id == gate.id) or Conflict("the gate is gone")
    data = {
        "gate_id": str(gate.id),
        "by": decision.by,
        "automatic": decision.automatic,
        "action": action,
        **({"notes": decision.notes} if decision.notes else {}),
    }
    record_event(session, gate.run_id, f"gate.{target}", node_id=gate.node_id, data=data)


def _approve(
    session: Session, settings: Settings, gate: Any, decision: Decision, approval: Approval
) -> None:
    where = [Node.id == gate.node_id]
    cause = "approved"
    if gate.when == "before":
        move_nodes(session, where, NodeStatus.WAITING_APPROVAL, NodeStatus.READY, cause=cause)
        return
    if approval.edit is not None:
        _record_edit(session, gate, approval.edit, decision.by)
    move_nodes(session, where, NodeStatus.WAITING_APPROVAL, NodeStatus.SUCCEEDED, cause=cause)
    if approval.outline is not None:
        scheduling.expand_report(
            session, gate.run_id, gate.node_id, gate.run_title, approval.outline, settings
        )
    scheduling.promote_pending_nodes(session, after=[gate.node_id])


def _record_edit(session: Session, gate: Any, edit: Edit, by: str) -> None:
    session.add(Artifact(**edit.artifact, created_at=utcnow()))
    session.flush()
    data = {
        "artifact_id": str(edit.artifact["id"]),
        "edited_from": str(edit.edited_from),
        "by": by,
        "size": edit.artifact["size"],
    }
    record_event(session, gate.run_id, "artifact.edited", node_id=gate.node_id, data=data)


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


class ExpiredGate(NamedTuple):
    id: uuid.UUID
    run_id: uuid.UUID
    node_id: uuid.UUID
    on_timeout: str | None

    def decision(self) -> Decision:
        """What its policy decides now that it timed out."""
        return Decision(
            approve=self.on_timeout == "approve",
            by=TIMEOUT_DECIDER,
            notes="the gate timed out",
            action="fail" if self.on_timeout == "fail" else "retry",
            automatic=True,
            gate_id=self.id,
        )


def expired_gates(
    session: Session, *, excluded: Collection[uuid.UUID] = (), limit: int = scheduling.BATCH
) -> list[ExpiredGate]:
    """The pending gates past their `expires_at` by the database's clock, oldest first, but
    those `excluded`."""
    dialect = session.get_bind().dialect.name
    statement = (
        select(GATES.c.id, GATES.c.run_id, GATES.c.node_id, GATES.c.on_timeout)
        .where(GATES.c.status == GateStatus.PENDING, GATES.c.expires_at < database_time(dialect))
        .order_by(GATES.c.expires_at)
        .limit(limit)
    )
    if excluded:
        statement = statement.where(GATES.c.id.not_in(list(excluded)))
    return [ExpiredGate(*row) for row in session.execute(statement)]
