"""What the metrics scrape reads from the database: runs and nodes by status, waiting gates, the
worker queue.

The runs and nodes still at work (queued, running, waiting; pending, ready, running, waiting for
approval) and the gates are counted at every scrape, through indexes that lead with `status`:
their number is bounded by the work in flight, so a scrape costs the same at a thousand runs as
at ten million. Runs and nodes in a terminal status only grow, and counting them reads every row
that ever ended (longer than a scrape's timeout at ten million runs), so `SettledCounts` counts
them in the background and a scrape reports its last count.
"""

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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

# A background count of the terminal statuses starts at a scrape at most this often (seconds; a
# scrape interval, so on a small database the figures lag by one scrape at most), and never
# takes more than a tenth of the time: a count that took 3 s starts again 30 s later at the
# soonest.
SETTLED_MIN_INTERVAL = 15.0
SETTLED_DUTY_CYCLE = 0.1
# How long a scrape waits for the first count of a process (seconds). A scrape that it does not
# answer in time leaves the terminal statuses out, rather than report them 0.
FIRST_COUNT_WAIT = 1.0


async def _count_by_status(
    connection: AsyncConnection, model: type[Run] | type[Node], statuses: Collection[str]
) -> dict[str, int]:
    rows = await connection.execute(
        select(model.status, func.count()).where(model.status.in_(statuses)).group_by(model.status)
    )
    # Every status is reported, 0 included, so a series never vanishes when its count drops to 0.
    return {status: 0 for status in statuses} | {str(s): n for s, n in rows.all()}


@dataclass(frozen=True, slots=True)
class Settled:
    """Runs and nodes in terminal statuses, as one count found them."""

    runs: Mapping[str, int]
    nodes: Mapping[str, int]


async def count_settled(connection: AsyncConnection) -> Settled:
    """Runs and nodes in terminal statuses now: reads every one of them."""
    return Settled(
        runs=await _count_by_status(connection, Run, RUN_TERMINAL),
        nodes=await _count_by_status(connection, Node, NODE_TERMINAL),
    )


class SettledCounts:
    """The last count of the runs and nodes in terminal statuses, one per process, counted again
    in the background when a scrape finds it older than the interval allows."""

    def __init__(self) -> None:
        self._last: Settled | None = None
        self._started = 0.0
        self._took = 0.0
        self._counting: asyncio.Task[None] | None = None

    async def current(self, engine: AsyncEngine) -> Settled | None:
        """The last count (None before the first is in), starting the next when it is due."""
        loop = asyncio.get_running_loop()
        interval = max(SETTLED_MIN_INTERVAL, self._took / SETTLED_DUTY_CYCLE)
        if self._counting is None and (
            self._last is None or loop.time() >= self._started + interval
        ):
            self._started = loop.time()
            self._counting = asyncio.create_task(self._count(engine))
        if self._last is None and self._counting is not None:
            # A scrape that stops waiting leaves the count running (wait cancels nothing).
            await asyncio.wait({self._counting}, timeout=FIRST_COUNT_WAIT)
        return self._last

    async def _count(self, engine: AsyncEngine) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with engine.connect() as connection:
                self._last = await count_settled(connection)
            self._took = loop.time() - self._started
        except Exception:
            # The next scrape tries again; until then it reports the last count it has.
            logger.warning("counting the runs and nodes in terminal statuses failed", exc_info=True)
        finally:
            self._counting = None


async def read_gauges(
    connection: AsyncConnection, settled: SettledCounts | None = None
) -> DatabaseGauges:
    """The database's gauges: the work in flight read now, the terminal statuses from `settled`'s
    last count (counted now when there is none)."""
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
    runs = await _count_by_status(connection, Run, RUN_ACTIVE)
    nodes = await _count_by_status(connection, Node, NODE_ACTIVE)
    last = await settled.current(connection.engine) if settled else await count_settled(connection)
    if last is not None:
        runs |= last.runs
        nodes |= last.nodes
    return DatabaseGauges(
        runs_by_status={s.value: runs[s.value] for s in RunStatus if s.value in runs},
        nodes_by_status={s.value: nodes[s.value] for s in NodeStatus if s.value in nodes},
        gates_waiting=waiting,
        oldest_gate_wait_seconds=(now - oldest).total_seconds() if oldest else 0.0,
        ready_nodes=ready or 0,
    )
