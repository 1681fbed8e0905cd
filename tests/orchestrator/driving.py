"""Driving a run to its end in tests without waiting out retry backoffs."""

from typing import Any

import httpx
from sqlalchemy import update

from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.model.models import Node
from apps.orchestrator.worker.loop import Worker


async def run_to_the_end(
    worker: Worker, sessions: SessionFactory, client: httpx.AsyncClient, run_id: str
) -> dict[str, Any]:
    """Drain `worker` until the run ends, making every backed-off retry due at once; the run."""
    while (run := (await client.get(f"/runs/{run_id}")).json())["status"] not in (
        "succeeded",
        "failed",
    ):
        await worker.drain()
        async with unit_of_work(sessions) as session:
            await session.execute(update(Node).values(next_attempt_at=None))
    return run
