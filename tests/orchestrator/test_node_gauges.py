"""The nodes' gauges agree with the nodes themselves through runs' whole lives: on SQLite they are
summed from the runs' node counts its triggers keep (there is no index on the nodes' status,
migration 0009), on PostgreSQL counted from the nodes."""

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from apps.core.database import Transactions
from apps.core.settings import Settings
from apps.orchestrator.model.models import Node, Run
from apps.orchestrator.model.states import NodeStatus, RunStatus
from apps.orchestrator.reading import gauges
from apps.orchestrator.reading.gauges import NODE_ACTIVE, StatusCounts, read_gauges
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_worker import _submit

STEPS = 200


def _chain(*keys: str, gated: str | None = None) -> dict[str, Any]:
    """A DAG of `keys` in a chain; the node `gated` waits for an approval."""
    nodes: list[dict[str, Any]] = []
    for index, key in enumerate(keys):
        node: dict[str, Any] = {"key": key, "role": "writer", "prompt": f"{key}."}
        if index:
            node["deps"] = [keys[index - 1]]
        if key == gated:
            node["gate"] = {"timeout_minutes": 60}
        nodes.append(node)
    return {"type": "dag", "nodes": nodes}


async def _status_of(client: httpx.AsyncClient, run_id: str) -> str:
    status: str = (await client.get(f"/runs/{run_id}")).json()["status"]
    return status


class GaugesChecked:
    """After each step, the gauges as a scrape reads them, counting now and (once counting is
    slow) the nodes at work read at the scrape, against a count of the nodes themselves."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.background = StatusCounts()
        self.seen: set[str] = set()

    async def check(self) -> None:
        async with self.app.state.engine.connect() as connection:
            rows = await connection.execute(select(Node.status, func.count()).group_by(Node.status))
            counted = {str(status): n for status, n in rows.all()}
            ready = await connection.scalar(
                select(func.count())
                .select_from(Node)
                .join(Run, Run.id == Node.run_id)
                .where(Node.status == NodeStatus.READY, Run.status == RunStatus.RUNNING)
            )
            now = await read_gauges(connection)
            slow = await read_gauges(connection, self.background)
        expected = {status.value: counted.get(status.value, 0) for status in NodeStatus}
        assert now.nodes_by_status == expected
        assert now.ready_nodes == ready
        at_work = {status: n for status, n in slow.nodes_by_status.items() if status in NODE_ACTIVE}
        assert at_work == {status: expected[status] for status in NODE_ACTIVE}
        self.seen |= {status for status, n in counted.items() if n}


async def test_the_node_gauges_equal_the_nodes_by_status_through_runs_lives(
    app: FastAPI,
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every count is "slow": after the first, `GaugesChecked.background` reads the nodes at
    # work at each scrape and never counts the terminal ones again.
    monkeypatch.setattr(gauges, "INLINE_LIMIT", -1.0)
    monkeypatch.setattr(gauges, "BACKGROUND_MIN_INTERVAL", 1e9)
    checked = GaugesChecked(app)
    await checked.check()
    approved = await _submit(client, _chain("a", "b", "c", gated="b"))
    rejected = await _submit(client, _chain("d", "e", "f", gated="e"))
    cancelled = await _submit(client, _chain("g", "h", "i", "j"))
    await checked.check()

    worker = Worker(transactions, settings)
    await _step_until(worker, checked, client, {approved: "waiting", rejected: "waiting"})
    assert (await client.post(f"/runs/{approved}/approve", json={})).status_code == 200
    await checked.check()
    failed = await client.post(f"/runs/{rejected}/reject", json={"action": "fail"})
    assert failed.status_code == 200
    await checked.check()
    assert (await client.post(f"/runs/{cancelled}/cancel")).status_code == 202
    await checked.check()
    await _step_until(
        worker,
        checked,
        client,
        {approved: "succeeded", rejected: "failed", cancelled: "cancelled"},
    )
    assert checked.seen == {status.value for status in NodeStatus}


async def _step_until(
    worker: Worker, checked: GaugesChecked, client: httpx.AsyncClient, wanted: dict[str, str]
) -> None:
    """Pass after pass, the gauges checked after each, until the runs are as `wanted`."""
    for _ in range(STEPS):
        if not await worker.step():
            await asyncio.sleep(0.01)  # the attempts it started end meanwhile
        await checked.check()
        if {run: await _status_of(client, run) for run in wanted} == wanted:
            return
    pytest.fail(f"the runs are not {wanted} after {STEPS} passes")
