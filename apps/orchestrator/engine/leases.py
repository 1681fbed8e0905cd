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
from apps.orchestrator.model.clock import database_time, database_time_later, time_parameters
from apps.orchestrator.model.locks import lock_runs
from apps.orchestrator.model.models import NODES, Node, Run
from apps.orchestrator.model.states import NodeStatus


def renew_and_take_back_leases(session: Session, *, worker: str, lease_seconds: float) -> int:
    """A worker's heartbeat: take back the expired leases of other workers, and renew its own
    (even expired ones, after a stall: it is still running their attempts, and taking them back
    would pay for their calls twice); how many it took back."""
    taken_back = take_back_expired_leases(session, besides=worker)
    renew_leases(session, worker=worker, lease_seconds=lease_seconds)
    return taken_back


def renew_leases(session: Session, *, worker: str, lease_seconds: float) -> int:
    """Extend the leases of the nodes `worker` is running (its heartbeat).

    A node whose row another transaction holds is changing hands (its attempt is being
    recorded, or stopped): its lease is left as it is rather than waited for (see `locks`)."""
    dialect = session.get_bind().dialect.name
    connection = session.connection()
    held = (
        select(NODES.c.id)
        .where(NODES.c.lease_owner == worker, NODES.c.status == NodeStatus.RUNNING)
        .with_for_update(key_share=True, skip_locked=True)
    )
    result = connection.execute(
        update(NODES)
        .where(NODES.c.id.in_(held.scalar_subquery()))
        .values(lease_expires_at=database_time_later(dialect)),
        time_parameters(dialect, lease_seconds),
    )
    return result.rowcount


def take_back_expired_leases(session: Session, *, besides: str | None = None) -> int:
    """Retry (or fail, with no attempts left) running nodes whose worker stopped renewing, or
    cancel them in a run being cancelled; how many were taken back. The leases of the worker
    `besides` are left to it."""
    dialect = session.get_bind().dialect.name
    expired = [Node.status == NodeStatus.RUNNING, Node.lease_expires_at < database_time(dialect)]
    if besides is not None:
        expired.append(Node.lease_owner.is_distinct_from(besides))
    candidates = session.scalars(select(Node.run_id).where(*expired).limit(BATCH))
    # The runs first (see `locks`), so a cancel asked for meanwhile is seen; then the nodes
    # still expired, locked so that their worker's renewal cannot slip in before they are taken.
    runs = lock_runs(session, set(candidates))
    if not runs:
        return 0
    nodes = session.execute(
        select(Node.id, Node.run_id, Node.key, Node.attempt, Node.max_attempts, Node.lease_owner)
        .where(*expired, Node.run_id.in_(list(runs)))
        .limit(BATCH)
        .with_for_update(key_share=True, skip_locked=True)
    ).all()
    taken_back = 0
    for node in nodes:
        if runs[node.run_id].cancelling:
            taken_back += cancel_attempt(session, node)
            continue
        message = f"lease of worker {node.lease_owner} expired"
        ended = end_attempt(session, node, message, retryable=True, cause="lease_expired")
        taken_back += ended is not None
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
