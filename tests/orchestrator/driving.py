"""Driving a run to its end in tests without waiting out retry backoffs."""

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.model.models import Node
from apps.orchestrator.worker.loop import Worker


async def run_to_the_end(
    worker: Worker,
    sessions: SessionFactory,
    client: httpx.AsyncClient,
    run_id: str,
    *,
    seconds: float = 60.0,
) -> dict[str, Any]:
    """Drain `worker` until the run ends, making every backed-off retry due at once; the run.
    Fails the test when the run has not ended after `seconds`."""
    deadline = time.monotonic() + seconds
    while (run := (await client.get(f"/runs/{run_id}")).json())["status"] not in (
        "succeeded",
        "failed",
    ):
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} is still {run['status']} after {seconds:g} s")
        await worker.drain()
        async with unit_of_work(sessions) as session:
            await session.execute(update(Node).values(next_attempt_at=None))
    return run
