"""Status changes of runs and nodes, each written with its event in the caller's transaction.

A change is a conditional UPDATE on the status the caller last saw. If another process got there
first (a cancel, a lease taken back), the row no longer matches, nothing is written and
`InvalidTransition` says what the row is now: a late worker cannot overwrite a final state.
"""

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, NoReturn, Protocol

from sqlalchemy import ColumnElement, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from apps.core.database import JSON_SERIALIZER, insert_at_commit, take_at_commit
from apps.core.errors import InvalidTransition
from apps.core.text import storable_error
from apps.orchestrator.model.models import EVENTS, NODES, Node, Run, utcnow
from apps.orchestrator.model.prepared import connection_of, execute_many
from apps.orchestrator.model.states import (
    NODE_RERUNNABLE,
    NODE_TERMINAL,
    RUN_RESUMABLE,
    RUN_TERMINAL,
    NodeStatus,
    RunStatus,
    check_node_transition,
    check_run_transition,
)
from apps.wire.event_types import EVENT_TYPES

RUN_EVENTS = {
    RunStatus.RUNNING: "run.started",
    RunStatus.WAITING: "run.waiting",
    RunStatus.SUCCEEDED: "run.succeeded",
    RunStatus.FAILED: "run.failed",
    RunStatus.CANCELLED: "run.cancelled",
}
NODE_EVENTS = {
    # Back to pending: a resumed run runs the node again.
    NodeStatus.PENDING: "node.requeued",
    NodeStatus.READY: "node.ready",
    NodeStatus.RUNNING: "node.started",
    NodeStatus.WAITING_APPROVAL: "node.waiting_approval",
    NodeStatus.SUCCEEDED: "node.succeeded",
    NodeStatus.FAILED: "node.failed",
    NodeStatus.CANCELLED: "node.cancelled",
    NodeStatus.SKIPPED: "node.skipped",
}


EVENT_COLUMNS = ("run_id", "node_id", "type", "ts", "data")
# Each column bound by name, as `record_event` gives them (see `insert_recorded_events`).
INSERT_EVENTS = insert(EVENTS).values(
    {name: bindparam(name, type_=EVENTS.c[name].type) for name in EVENT_COLUMNS}
)


def record_event(
    session: Session,
    run_id: uuid.UUID,
    type: str,
    *,
    node_id: uuid.UUID | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Record an event in the session's unit of work: it is inserted at its commit point, after
    everything else the unit wrote, with the unit's other events in the order they happened.

    Last, because event ids must be commit-ordered for "events after id N" never to miss one: on
    PostgreSQL the insert takes a lock held until commit (a trigger of the schema's), so the
    shorter the time between insert and commit, the less writers wait on each other. SQLite has
    one writer at a time. The event becomes visible with the change it describes, or never.
    """
    if type not in EVENT_TYPES:
        # A type clients cannot ask for by name (`GET /events?type=`) must not be written.
        raise ValueError(f"{type!r} is not in apps.wire.event_types.EVENT_TYPES")
    row = {"run_id": run_id, "node_id": node_id, "type": type, "ts": utcnow(), "data": data or {}}
    insert_at_commit(session, INSERT_EVENTS, row)


def insert_recorded_events(session: Session) -> None:
    """Insert the events recorded so far, as the commit point would: for work that ends with
    them (a worker's pass), on SQLite through the driver's cursor (`prepared`)."""
    rows = take_at_commit(session, INSERT_EVENTS)
    if rows:
        session.flush()
        execute_many(connection_of(session), INSERT_EVENTS, rows)


def move_runs(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    current: RunStatus,
    target: RunStatus,
    *,
    cause: str,
    error: str | None = None,
    data: dict[str, Any] | None = None,
) -> list[uuid.UUID]:
    """Move the runs in `current` that match `where` to `target`, with an event each; their ids.

    A failed or cancelled run going back to running is an operator's resume, checked as such.
    Going back to running from anything but queued is recorded as `run.resumed`.
    """
    now = utcnow()
    error = storable_error(error) if error is not None else None
    values: dict[str, Any] = {"status": target, "updated_at": now}
    if current in RUN_RESUMABLE and target is RunStatus.RUNNING:
        values |= {"finished_at": None, "error": None, "cancel_requested_at": None}
    else:
        check_run_transition(current, target)
    if target is RunStatus.RUNNING:
        values["started_at"] = func.coalesce(Run.started_at, now)
    if target in RUN_TERMINAL:
        values |= {"finished_at": now, "error": error}
    connection = connection_of(session)
    result = connection.execute(
        update(Run).where(Run.status == current, *where).values(values).returning(Run.id)
    )
    moved = list(result.scalars())
    details = {"from": current.value, "cause": cause, **({"error": error} if error else {})}
    resumed = target is RunStatus.RUNNING and current is not RunStatus.QUEUED
    kind = "run.resumed" if resumed else RUN_EVENTS[target]
    for run_id in moved:
        record_event(session, run_id, kind, data=details | (data or {}))
    return moved


def move_run(
    session: Session,
    run_id: uuid.UUID,
    current: RunStatus,
    target: RunStatus,
    *,
    cause: str,
    error: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Move one run from `current` to `target` and record `run.<target>`; see the module doc."""
    moved = move_runs(
        session, [Run.id == run_id], current, target, cause=cause, error=error, data=data
    )
    if not moved:
        _refuse(session, Run, run_id, current, "run")


class MovedNode(NamedTuple):
    id: uuid.UUID
    run_id: uuid.UUID
    position: int
    attempt: int


def node_values(
    current: NodeStatus, target: NodeStatus, now: Any, error: Any = None
) -> dict[str, Any]:
    """The columns a move from `current` to `target` sets, once the rules allow it.

    `now` and `error` may be values or bound parameters of a statement built once. A final
    node going back to pending is a resumed run's rerun, checked as such.
    """
    values: dict[str, Any] = {"status": target, "updated_at": now}
    if current in NODE_RERUNNABLE and target is NodeStatus.PENDING:
        return values | {
            "error": None,
            "finished_at": None,
            "next_attempt_at": None,
            "lease_owner": None,
            "lease_expires_at": None,
        }
    check_node_transition(current, target)
    if target is NodeStatus.RUNNING:
        values["started_at"] = now
    if target in NODE_TERMINAL:
        values |= {
            "finished_at": now,
            "error": error,
            "lease_owner": None,
            "lease_expires_at": None,
        }
    elif error is not None:
        values["error"] = error
    return values


MOVED_NODE_COLUMNS = (NODES.c.id, NODES.c.run_id, NODES.c.position, NODES.c.attempt)


def moved_nodes(rows: Iterable[Any]) -> list[MovedNode]:
    """The rows an UPDATE of nodes returned (`MOVED_NODE_COLUMNS`), in plan order."""
    moved = (MovedNode(row.id, row.run_id, row.position, row.attempt) for row in rows)
    return sorted(moved, key=lambda node: (node.run_id, node.position))


def record_node_moves(
    session: Session,
    moved: Iterable[MovedNode],
    current: NodeStatus,
    target: NodeStatus,
    *,
    cause: str,
    error: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """The event of each node moved from `current` to `target`.

    Running back to ready is a retry and is recorded as `node.retrying`; `node.started` carries
    the attempt it starts.
    """
    kind = node_event_type(current, target)
    for node in moved:
        event_data = node_event_data(current, target, node.attempt, cause, error, data)
        record_event(session, node.run_id, kind, node_id=node.id, data=event_data)


def node_event_type(current: NodeStatus, target: NodeStatus) -> str:
    """The type of the event of a node moved from `current` to `target`."""
    retry = current is NodeStatus.RUNNING and target is NodeStatus.READY
    return "node.retrying" if retry else NODE_EVENTS[target]


def node_event_data(
    current: NodeStatus,
    target: NodeStatus,
    attempt: int,
    cause: str,
    error: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The data of the event of a node moved from `current` to `target` on `attempt`."""
    details = {"from": current.value, "cause": cause, **({"error": error} if error else {})}
    extra = {"attempt": attempt} if target is NodeStatus.RUNNING else {}
    return details | extra | (data or {})


# An attempt no node reaches, written where a statement puts the attempt it claims.
ATTEMPT_MARK = 2**53 - 1


def started_event_text(cause: str, data: dict[str, Any]) -> tuple[str, str]:
    """The data of a started node's event as JSON text, as `record_event` writes it, in two:
    before and after its attempt, for a statement that writes the attempt it starts between
    them (`statements.claim`)."""
    event_data = node_event_data(
        NodeStatus.READY, NodeStatus.RUNNING, ATTEMPT_MARK, cause, None, data
    )
    before, after = JSON_SERIALIZER(event_data).split(str(ATTEMPT_MARK))
    return before, after


def move_nodes(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    current: NodeStatus,
    target: NodeStatus,
    *,
    cause: str,
    error: str | None = None,
    data: dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
    **columns: Any,
) -> list[MovedNode]:
    """Move the nodes in `current` that match `where` to `target`, setting `columns` too, with
    an event each; the moved nodes in plan order. `parameters` binds what `columns` leave as
    parameters."""
    error = storable_error(error) if error is not None else None
    values = node_values(current, target, utcnow(), error) | columns
    connection = connection_of(session)
    result = connection.execute(
        update(NODES)
        .where(NODES.c.status == current, *where)
        .values(values)
        .returning(*MOVED_NODE_COLUMNS),
        parameters or {},
    )
    moved = moved_nodes(result)
    record_node_moves(session, moved, current, target, cause=cause, error=error, data=data)
    return moved


class NodeRef(Protocol):
    @property
    def id(self) -> uuid.UUID: ...


def move_node(
    session: Session,
    node: NodeRef,
    current: NodeStatus,
    target: NodeStatus,
    *,
    cause: str,
    error: str | None = None,
    data: dict[str, Any] | None = None,
    expected_attempt: int | None = None,
    parameters: dict[str, Any] | None = None,
    **columns: Any,
) -> None:
    """Move one node from `current` to `target` (only while its attempt is `expected_attempt`,
    when given), setting `columns` too, and record its event; see the module doc."""
    where = [NODES.c.id == node.id]
    if expected_attempt is not None:
        where.append(NODES.c.attempt == expected_attempt)
    moved = move_nodes(
        session,
        where,
        current,
        target,
        cause=cause,
        error=error,
        data=data,
        parameters=parameters,
        **columns,
    )
    if not moved:
        _refuse(session, Node, node.id, current, "node")


def _refuse(
    session: Session,
    model: type[Run] | type[Node],
    row_id: uuid.UUID,
    current: RunStatus | NodeStatus,
    kind: str,
) -> NoReturn:
    now_status = session.scalar(select(model.status).where(model.id == row_id))
    if now_status is None:
        raise InvalidTransition(f"{kind} {row_id} does not exist")
    if now_status == current:
        raise InvalidTransition(f"{kind} is {now_status} but on another attempt now")
    raise InvalidTransition(f"{kind} is {now_status} now, not {current}")
