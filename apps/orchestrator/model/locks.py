"""The one order in which transactions take locks: the rows of the runs they change first, in id
order, before any row of their nodes, gates or artifacts.

Every transaction that changes a run or what belongs to it (an operator's decision, cancel or
resume, a worker's pass recording attempts, a lease taken back, a gate timing out) locks the run
first. Two of them on one run then run one after the other, whatever they touch next, and neither
decides on a state the other is changing: a cancel cannot slip between a pass reading that no
cancel was asked for and the pass gating an output, and no two wait on each other's rows
(PostgreSQL's deadlocks). What touches a run without locking it never waits for a row: claims and
lease renewals pass over rows locked by others (SKIP LOCKED).

The lock is FOR NO KEY UPDATE, which every UPDATE of a run takes anyway: inserting events, nodes
or artifacts of a locked run (a foreign key's KEY SHARE) is not held up by it. SQLite has one
writer at a time, so there the lock is no statement at all.
"""

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Select, Uuid, select
from sqlalchemy.orm import Session

from apps.core.errors import NotFound
from apps.orchestrator.model.models import RUNS
from apps.orchestrator.model.prepared import (
    begin_with,
    chunked,
    connection_of,
    fetch,
    listed,
    spread,
)
from apps.orchestrator.model.states import RunStatus


class LockedRun(NamedTuple):
    """A locked run as it is now: no other transaction changes it until this one ends."""

    status: RunStatus
    cancel_requested_at: datetime | None

    @property
    def cancelling(self) -> bool:
        return self.cancel_requested_at is not None


def lock_runs(session: Session, run_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, LockedRun]:
    """Lock the runs of `run_ids` in id order, waiting for those another transaction holds;
    each one's state once locked (runs that do not exist are left out)."""
    connection = connection_of(session)
    locked = {}
    for part in chunked(sorted(set(run_ids))):
        for row in fetch(connection, _lock(len(part)), spread("id", part)):
            locked[row.id] = LockedRun(row.status, row.cancel_requested_at)
    return locked


def lock_runs_for_recording(session: Session, run_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Lock the runs of `run_ids` (see `lock_runs`) for a pass that records their outcomes;
    those of them a cancel was asked for.

    On PostgreSQL a pass begins with this lock: its transaction's BEGIN and the lock, which
    counts the runs being cancelled, go in one simple query, one round trip where they took two
    (asyncpg sends its BEGIN alone). Only when that count is not zero (rare) are the runs read
    back, already locked."""
    ids = sorted(set(run_ids))
    if not ids:
        return set()
    status = begin_with(connection_of(session), _lock_and_count_cancelling(ids))
    if status == "SELECT 0":
        return set()
    return {run_id for run_id, run in lock_runs(session, ids).items() if run.cancelling}


def _lock_and_count_cancelling(run_ids: Sequence[uuid.UUID]) -> str:
    """`_lock` as SQL text (a simple query takes no parameters), counting the runs locked that
    are being cancelled: each id is written as its `hex`, 32 hexadecimal digits and nothing
    else. The outer query reads the rows as the lock returns them, once it holds them (their
    latest versions), as `lock_runs` reads them. OFFSET 0 keeps the outer condition out of the
    locking query: pushed down, it would lock only the runs that were being cancelled in the
    statement's snapshot, and miss a cancel committed while it waited."""
    ids = ", ".join(f"'{run_id.hex}'" for run_id in run_ids)
    return (
        f"SELECT FROM (SELECT cancel_requested_at FROM {RUNS.name} WHERE id IN ({ids})"
        " ORDER BY id OFFSET 0 FOR NO KEY UPDATE) AS locked"
        " WHERE cancel_requested_at IS NOT NULL"
    )


@cache
def _lock(count: int) -> Select[Any]:
    # A Core statement built once (per number of runs): every pass that records attempts runs
    # it, and through the ORM it cost more than the rest of a node's recording.
    return (
        select(RUNS.c.id, RUNS.c.status, RUNS.c.cancel_requested_at)
        .where(RUNS.c.id.in_(listed("id", count, Uuid())))
        .order_by(RUNS.c.id)
        .with_for_update(key_share=True)
    )


def lock_run(session: Session, run_id: uuid.UUID) -> LockedRun:
    """Lock one run (see `lock_runs`); `NotFound` if there is no such run."""
    locked = lock_runs(session, [run_id]).get(run_id)
    if locked is None:
        raise NotFound(f"run {run_id} not found")
    return locked
