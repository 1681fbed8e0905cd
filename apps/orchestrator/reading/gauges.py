"""What the metrics scrape reads from the database: runs and nodes by status, waiting gates, the
worker queue.

Runs and nodes are counted by status in one statement each, and while that is cheap (under
`INLINE_LIMIT`) every scrape does it, so the figures are exact and add up. Counting reads every run
and node that ever ended, though, which at ten million runs takes longer than a scrape's timeout;
once a count takes longer than that, `StatusCounts` counts in the background and a scrape reports
the runs and nodes still at work (queued, running, waiting; pending, ready, running, waiting for
approval) read now, through indexes that lead with `status` (their number is bounded by the work
in flight), and the terminal statuses, which only grow, as the last count found them.

SQLite has no index on the nodes' status (migration 0009: a claim paid for keeping it up to date
at every move of a node): there the nodes are counted from the counts its triggers keep a run in
`run_node_counts`, summed over every run, or over the runs still at work for the nodes still at
work (a run ends once all of its nodes have).
"""

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import Integer, column, func, select, table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apps.core.database import is_transient
from apps.core.metrics import DatabaseGauges
from apps.orchestrator.model.clock import database_time
from apps.orchestrator.model.models import Gate, Node, Run
from apps.orchestrator.model.states import (
    NODE_TERMINAL,
    RUN_TERMINAL,
    GateStatus,
    NodeStatus,
    RunStatus,
)

logger = logging.getLogger(__name__)

RUN_ACTIVE = frozenset(RunStatus) - RUN_TERMINAL
NODE_ACTIVE = frozenset(NodeStatus) - NODE_TERMINAL

# A count that took at most this long (seconds) is done again at the next scrape, which waits for
# it; a longer one moves counting to the background.
INLINE_LIMIT = 0.1
# In the background a count starts at a scrape at most this often (seconds; a scrape interval),
# and never takes more than a tenth of the time: one that took 3 s starts again 30 s later.
BACKGROUND_MIN_INTERVAL = 15.0
BACKGROUND_DUTY_CYCLE = 0.1
# How long a scrape waits for a count it started (seconds). A scrape that it does not answer in
# time reports the last count's terminal statuses, or leaves them out if there is none yet,
# rather than report them 0.
COUNT_WAIT = 1.0
# How long a scrape waits for the database's gauges before it answers without them (seconds).
GAUGES_WAIT = 5.0


async def _count_by_status(
    connection: AsyncConnection,
    model: type[Run] | type[Node],
    statuses: Collection[str],
    *,
    only: bool = False,
) -> dict[str, int]:
    """Rows of `model` by status, every one of `statuses` named (0 included); `only`: reads only
    the rows in `statuses`."""
    statement = select(model.status, func.count()).group_by(model.status)
    if only:
        statement = statement.where(model.status.in_(statuses))
    rows = await connection.execute(statement)
    # Every status is reported, 0 included, so a series never vanishes when its count drops to 0.
    return {status: 0 for status in statuses} | {str(s): n for s, n in rows.all()}


# SQLite's per-run node counts (migration 0007), a column a status; no model declares them.
NODE_COUNTS = table(
    "run_node_counts", column("run_id"), *(column(s.value, Integer) for s in NodeStatus)
)


async def _count_nodes_by_status(
    connection: AsyncConnection, statuses: Collection[str], *, only: bool = False
) -> dict[str, int]:
    """Nodes by status as `_count_by_status` counts them; on SQLite from the runs' node counts,
    `only` summing those of the runs still at work."""
    if connection.dialect.name != "sqlite":
        return await _count_by_status(connection, Node, statuses, only=only)
    named = sorted(statuses)
    statement = select(*(func.coalesce(func.sum(NODE_COUNTS.c[s]), 0) for s in named))
    if only:
        statement = statement.join_from(NODE_COUNTS, Run, Run.id == NODE_COUNTS.c.run_id).where(
            Run.status.in_(RUN_ACTIVE)
        )
    else:
        statement = statement.select_from(NODE_COUNTS)
    counts = (await connection.execute(statement)).one()
    return dict(zip(named, counts, strict=True))


@dataclass(frozen=True, slots=True)
class Counted:
    """Runs and nodes by status, as one count found them."""

    runs: Mapping[str, int]
    nodes: Mapping[str, int]


async def count_by_status(connection: AsyncConnection) -> Counted:
    """Runs and nodes by status now: reads every one of them."""
    return Counted(
        runs=await _count_by_status(connection, Run, frozenset(RunStatus)),
        nodes=await _count_nodes_by_status(connection, frozenset(NodeStatus)),
    )


class StatusCounts:
    """The last count of runs and nodes by status, one per process: counted again at every
    scrape while counting is cheap, else in the background when the last count is old enough."""

    def __init__(self) -> None:
        self._last: Counted | None = None
        self._started = 0.0
        self._took = 0.0
        self._counting: asyncio.Task[None] | None = None

    @property
    def inline(self) -> bool:
        """Whether the last count was cheap enough for a scrape to count again itself."""
        return self._last is not None and self._took <= INLINE_LIMIT and self._counting is None

    def record(self, counted: Counted, started: float, took: float) -> None:
        """A count a scrape made itself (see `inline`)."""
        self._last, self._started, self._took = counted, started, took

    async def current(self, engine: AsyncEngine) -> tuple[Counted | None, bool]:
        """The last count (None before the first is in), and whether this scrape made it; the
        next count is started in the background when it is due. A process's first count is
        waited for up to COUNT_WAIT, on a connection of its own: a count that outlasts the scrape
        goes on without it."""
        loop = asyncio.get_running_loop()
        interval = max(BACKGROUND_MIN_INTERVAL, self._took / BACKGROUND_DUTY_CYCLE)
        if self._counting is None and (
            self._last is None or loop.time() >= self._started + interval
        ):
            self._started = loop.time()
            self._counting = counting = asyncio.create_task(self._count(engine))
            if self._last is None:
                # A scrape that stops waiting leaves the count running (wait cancels nothing).
                await asyncio.wait({counting}, timeout=COUNT_WAIT)
                return self._last, counting.done()
        return self._last, False

    async def _count(self, engine: AsyncEngine) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with engine.connect() as connection:
                self._last = await count_by_status(connection)
            self._took = loop.time() - self._started
        except Exception:
            # The next scrape tries again; until then it reports the last count it has.
            logger.warning("counting the runs and nodes by status failed", exc_info=True)
        finally:
            self._counting = None


async def gauges_if_reachable(engine: AsyncEngine, counts: StatusCounts) -> DatabaseGauges | None:
    """The database's gauges (`read_gauges`), or None when the database is out of reach or does
    not answer within `GAUGES_WAIT`: the scrape then serves what the process recorded, which an
    outage is when it matters most (its 5xx, for one), and `CrewApiDown` does not mistake a
    database that is down for an API that is."""
    try:
        async with asyncio.timeout(GAUGES_WAIT), engine.connect() as connection:
            return await read_gauges(connection, counts)
    except (OSError, SQLAlchemyError) as error:
        if not is_transient(error):
            raise
        logger.warning("the scrape leaves out the database's gauges: %s", error)
        return None


async def read_gauges(
    connection: AsyncConnection, counts: StatusCounts | None = None
) -> DatabaseGauges:
    """The database's gauges; runs and nodes by status as `counts` has them (counted now on
    `connection` when there is no `counts`)."""
    # The database's clock, as the gates' opening times are (see `database_time`).
    clock = database_time(connection.dialect.name)
    waiting, oldest, now = (
        await connection.execute(
            select(func.count(), func.min(Gate.opened_at), clock).where(
                Gate.status == GateStatus.PENDING
            )
        )
    ).one()
    ready = await connection.scalar(
        select(func.count())
        .select_from(Node)
        .join(Run, Run.id == Node.run_id)
        .where(Node.status == NodeStatus.READY, Run.status == RunStatus.RUNNING)
    )
    counted: Counted | None
    if counts is None:
        counted, fresh = await count_by_status(connection), True
    elif counts.inline:
        loop = asyncio.get_running_loop()
        started = loop.time()
        counted, fresh = await count_by_status(connection), True
        counts.record(counted, started, loop.time() - started)
    else:
        counted, fresh = await counts.current(connection.engine)
    if counted is not None and fresh:
        runs, nodes = dict(counted.runs), dict(counted.nodes)
    else:
        runs = await _count_by_status(connection, Run, RUN_ACTIVE, only=True)
        nodes = await _count_nodes_by_status(connection, NODE_ACTIVE, only=True)
        if counted is not None:
            runs |= {status: counted.runs[status] for status in RUN_TERMINAL}
            nodes |= {status: counted.nodes[status] for status in NODE_TERMINAL}
    return DatabaseGauges(
        runs_by_status={s.value: runs[s.value] for s in RunStatus if s.value in runs},
        nodes_by_status={s.value: nodes[s.value] for s in NodeStatus if s.value in nodes},
        gates_waiting=waiting,
        oldest_gate_wait_seconds=(now - oldest).total_seconds() if oldest else 0.0,
        ready_nodes=ready or 0,
    )
