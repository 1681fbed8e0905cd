"""What the metrics scrape reads from the database: runs and nodes by status, waiting gates, the
worker queue. Four aggregate queries, each served by an index that leads with `status`."""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.core.metrics import DatabaseGauges
from apps.orchestrator.model.models import Gate, Node, Run, utcnow
from apps.orchestrator.model.states import GateStatus, NodeStatus, RunStatus


async def _count_by_status(
    connection: AsyncConnection,
    model: type[Run] | type[Node],
    statuses: type[RunStatus] | type[NodeStatus],
) -> dict[str, int]:
    rows = await connection.execute(select(model.status, func.count()).group_by(model.status))
    # Every status is reported, 0 included, so a series never vanishes when its count drops to 0.
    return {status.value: 0 for status in statuses} | {str(s): n for s, n in rows.all()}


async def read_gauges(connection: AsyncConnection) -> DatabaseGauges:
    """The database's gauges now."""
    now = utcnow()
    waiting, oldest = (
        await connection.execute(
            select(func.count(), func.min(Gate.opened_at)).where(Gate.status == GateStatus.PENDING)
        )
    ).one()
    ready = await connection.scalar(
        select(func.count())
        .select_from(Node)
        .join(Run, Run.id == Node.run_id)
        .where(Node.status == NodeStatus.READY, Run.status == RunStatus.RUNNING)
    )
    return DatabaseGauges(
        runs_by_status=await _count_by_status(connection, Run, RunStatus),
        nodes_by_status=await _count_by_status(connection, Node, NodeStatus),
        gates_waiting=waiting,
        oldest_gate_wait_seconds=(now - oldest).total_seconds() if oldest else 0.0,
        ready_nodes=ready or 0,
    )
