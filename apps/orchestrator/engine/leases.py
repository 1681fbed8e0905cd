"""Leases on running nodes: a worker's heartbeat renews its own, expired ones are taken back (the
node retried, or cancelled in a run being cancelled), and a worker learns which attempts it
should stop."""

import uuid
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from apps.orchestrator.engine.scheduling import (
    BATCH,
    cancel_attempt,
    end_attempt,
    finish_runs,
)
from apps.orchestrator.engine.statements import (
    database_time,
    database_time_later,
    time_parameters,
)
from apps.orchestrator.model.models import NODES, Node, Run
from apps.orchestrator.model.states import NodeStatus


def renew_and_take_back_leases(session: Session, *, worker: str, lease_seconds: float) -> int:
    """A worker's heartbeat: renew its own leases, and take back the expired leases of any
    worker (one that died, or this one after a stall); how many it took back."""
    renew_leases(session, worker=worker, lease_seconds=lease_seconds)
    return take_back_expired_leases(session)


def renew_leases(session: Session, *, worker: str, lease_seconds: float) -> int:
    """Extend the leases of the nodes `worker` is running (its heartbeat)."""
    dialect = session.get_bind().dialect.name
    connection = session.connection()
    result = connection.execute(
        update(NODES)
        .where(NODES.c.lease_owner == worker, NODES.c.status == NodeStatus.RUNNING)
        .values(lease_expires_at=database_time_later(dialect)),
        time_parameters(dialect, lease_seconds),
    )
    return result.rowcount


def take_back_expired_leases(session: Session) -> int:
    """Retry (or fail, with no attempts left) running nodes whose worker stopped renewing, or
    cancel them in a run being cancelled; how many were taken back."""
    dialect = session.get_bind().dialect.name
    nodes = (
        session.execute(
            select(
                Node.id,
                Node.run_id,
                Node.key,
                Node.attempt,
                Node.max_attempts,
                Node.lease_owner,
                Run.cancel_requested_at,
            )
            .join(Run, Run.id == Node.run_id)
            .where(
                Node.status == NodeStatus.RUNNING,
                Node.lease_expires_at < database_time(dialect),
            )
            .limit(BATCH),
            time_parameters(dialect),
        )
    ).all()
    taken_back = 0
    for node in nodes:
        if node.cancel_requested_at is not None:
            taken_back += cancel_attempt(session, node)
            continue
        message = f"lease of worker {node.lease_owner} expired"
        taken_back += end_attempt(session, node, message, retryable=True, cause="lease_expired")
    finish_runs(session, {node.run_id for node in nodes})
    return taken_back


def attempts_to_stop(
    session: Session, *, worker: str, node_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, bool]:
    """Those of `node_ids` whose attempts `worker` should stop, each with whether it still holds
    the node (its run is being cancelled: the worker records the stop) or not (the node ended,
    or its lease was taken back: someone else did)."""
    if not node_ids:
        return {}
    held = (Node.status == NodeStatus.RUNNING) & (Node.lease_owner == worker)
    rows = session.execute(
        select(Node.id, held)
        .join(Run, Run.id == Node.run_id)
        .where(Node.id.in_(node_ids), ~held | Run.cancel_requested_at.is_not(None))
    )
    return {node_id: bool(still_held) for node_id, still_held in rows}
