"""Human gates: a node held for a decision, before it starts or with its output.

A gate opens as one `gates` row (at most one pending per node) with a `gate.waiting` event that
carries when it expires; its run goes to `waiting` until no gate of it waits any more. Decisions
are in `control.decisions`, the inbox in `reading.gates`.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from apps.core.metrics import record_gate_wait
from apps.orchestrator.model.clock import database_now, database_time
from apps.orchestrator.model.models import GATES, Run
from apps.orchestrator.model.states import GateStatus, RunStatus
from apps.orchestrator.model.transitions import move_runs, record_event
from apps.orchestrator.plans.gate_policy import EffectiveGate, read_gate
from apps.wire.timestamps import utc_text


def gate_when(stored: dict[str, Any] | None) -> str | None:
    """ "before" or "after" for a node whose stored gate requires a decision, else None."""
    gate = read_gate(stored)
    return gate.when if gate is not None and gate.required else None


@dataclass(frozen=True, slots=True)
class Hold:
    """A node to hold at its gate: before it starts, or with the artifact it produced."""

    node_id: uuid.UUID
    run_id: uuid.UUID
    gate: dict[str, Any]
    artifact_id: uuid.UUID | None = None


def open_gates(session: Session, holds: Sequence[Hold]) -> None:
    """Open a pending gate for each hold (its node already moved to waiting_approval) and put
    the runs that were running into waiting."""
    now = database_now(session.connection())
    rows = [_gate_row(hold, now) for hold in holds]
    session.connection().execute(insert(GATES), rows)
    for row in rows:
        data = {
            "gate_id": str(row["id"]),
            "when": row["when"],
            "on_timeout": row["on_timeout"],
            "expires_at": utc_text(row["expires_at"]) if row["expires_at"] else None,
            "artifact_id": str(row["artifact_id"]) if row["artifact_id"] else None,
        }
        record_event(session, row["run_id"], "gate.waiting", node_id=row["node_id"], data=data)
    runs = {hold.run_id for hold in holds}
    move_runs(session, [Run.id.in_(runs)], RunStatus.RUNNING, RunStatus.WAITING, cause="gate")


def _gate_row(hold: Hold, now: datetime) -> dict[str, Any]:
    gate = read_gate(hold.gate) or EffectiveGate(required=True)
    return {
        "id": uuid.uuid4(),
        "run_id": hold.run_id,
        "node_id": hold.node_id,
        "artifact_id": hold.artifact_id,
        "status": GateStatus.PENDING,
        "when": gate.when,
        "on_timeout": gate.on_timeout,
        "opened_at": now,
        "expires_at": gate.expires_at(now),
        "automatic": False,
    }


def close_gates(session: Session, run_id: uuid.UUID, cause: str) -> None:
    """Close the run's pending gates with no decision (the run is failing or cancelled)."""
    result = session.connection().execute(
        update(GATES)
        .where(GATES.c.run_id == run_id, GATES.c.status == GateStatus.PENDING)
        .values(
            status=GateStatus.CANCELLED,
            decided_at=database_time(session.get_bind().dialect.name),
            automatic=True,
            notes=cause,
        )
        .returning(GATES.c.id, GATES.c.node_id)
    )
    for gate_id, node_id in result:
        data = {"gate_id": str(gate_id), "cause": cause}
        record_event(session, run_id, "gate.cancelled", node_id=node_id, data=data)


def count_gate_decision(gate: dict[str, Any]) -> None:
    """Count a decided gate (as `get_gate` shows it) and how long it waited."""
    waited = (gate["decided_at"] - gate["opened_at"]).total_seconds()
    record_gate_wait(waited, decision=str(gate["status"]))
