"""Every time the engine compares across processes (a lease, a gate's expiry, how long a gate
waited) is the database's: a host whose clock is hours off still agrees with the others.

Each test moves this process's clock (`time_machine`) as a host with a wrong clock would have
it; the database's clock stays where it is.
"""

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx
import time_machine
from fastapi import FastAPI

from apps.core.database import Transactions
from apps.core.settings import Settings
from apps.orchestrator.engine import leases, passes
from apps.orchestrator.model.models import utcnow
from apps.orchestrator.reading.gauges import read_gauges
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_cancel_outcomes import _ended
from tests.orchestrator.test_run_control import _working
from tests.orchestrator.test_worker import _submit

HOURS_OFF = 2


def _gated(timeout_minutes: float) -> dict[str, Any]:
    gate = {"timeout_minutes": timeout_minutes, "on_timeout": "approve"}
    return {
        "type": "dag",
        "nodes": [{"key": "draft", "role": "writer", "prompt": "D.", "gate": gate}],
    }


async def _gate(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    (gate,) = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    return gate


async def test_a_host_clock_ahead_does_not_decide_a_gate_before_it_expires(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    run_id = await _submit(client, _gated(timeout_minutes=60))
    await Worker(transactions, settings).drain()

    with time_machine.travel(utcnow() + timedelta(hours=HOURS_OFF), tick=True):
        async with _working(Worker(transactions, settings)):
            await asyncio.sleep(1.5)

    assert (await _gate(client, run_id))["status"] == "pending"


async def test_a_host_clock_behind_still_decides_a_gate_when_it_expires(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    run_id = await _submit(client, _gated(timeout_minutes=0.01))
    await Worker(transactions, settings).drain()

    with time_machine.travel(utcnow() - timedelta(hours=HOURS_OFF), tick=True):
        async with _working(Worker(transactions, settings)):
            assert (await _ended(client, run_id))["status"] == "succeeded"

    gate = await _gate(client, run_id)
    assert (gate["status"], gate["decided_by"]) == ("approved", "timeout")


async def test_a_gates_wait_is_measured_by_one_clock_whoever_decides_it(
    app: FastAPI, transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    run_id = await _submit(client, _gated(timeout_minutes=60))
    await Worker(transactions, settings).drain()

    with time_machine.travel(utcnow() + timedelta(hours=HOURS_OFF), tick=True):
        async with app.state.engine.connect() as connection:
            gauges = await read_gauges(connection)
        decided = (await client.post(f"/runs/{run_id}/approve", json={})).json()

    assert 0 <= gauges.oldest_gate_wait_seconds < 60
    waited = datetime.fromisoformat(decided["decided_at"]) - datetime.fromisoformat(
        decided["opened_at"]
    )
    assert timedelta(0) <= waited < timedelta(seconds=60)


async def test_a_host_clock_ahead_does_not_take_back_a_live_lease(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    await _submit(
        client, {"type": "dag", "nodes": [{"key": "a", "role": "writer", "prompt": "A."}]}
    )
    claimed = await transactions.run(
        passes.run_pass, [], worker="other-host", slots=1, settings=settings
    )
    assert len(claimed.claimed) == 1

    with time_machine.travel(utcnow() + timedelta(hours=HOURS_OFF), tick=True):
        taken_back = await transactions.run(leases.take_back_expired_leases)

    assert taken_back == 0
