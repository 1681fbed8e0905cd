"""An output that arrives for an attempt its node no longer runs (its lease was taken back and
another worker runs the next attempt) is refused by the pass, and the files the attempt wrote
are deleted: nothing on the disk outlives a pass that did not record it."""

import asyncio
import uuid
from datetime import timedelta

import httpx
from sqlalchemy import update

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.engine import leases, passes
from apps.orchestrator.infra.storage.base import sidecar_key
from apps.orchestrator.model.models import Node, utcnow
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_cancel_outcomes import PLAIN, ReplyOnRelease
from tests.orchestrator.test_run_control import _nodes
from tests.orchestrator.test_worker import _submit


async def test_the_files_of_an_attempt_whose_output_was_refused_are_deleted(
    transactions: Transactions,
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    provider = ReplyOnRelease()
    run_id = await _submit(client, PLAIN)
    worker = Worker(transactions, settings, {"demo": provider})
    await worker.step()
    await asyncio.wait_for(provider.started.wait(), 10)
    draft = (await _nodes(client, run_id))["draft"]["id"]
    async with unit_of_work(sessions) as session:
        await session.execute(
            update(Node)
            .where(Node.id == uuid.UUID(draft))
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await transactions.run(leases.take_back_expired_leases) == 1
    async with unit_of_work(sessions) as session:
        await session.execute(update(Node).values(next_attempt_at=None))
    other = await transactions.run(
        passes.run_pass, [], worker="other-worker", slots=1, settings=settings
    )
    assert [work.attempt for work in other.claimed] == [2]

    provider.release.set()
    await worker.drain()

    first = "1/draft.md"
    assert not (settings.artifacts_dir / run_id / first).exists()
    assert not (settings.artifacts_dir / run_id / sidecar_key(first)).exists()
    assert (await client.get(f"/runs/{run_id}/artifacts")).json()["items"] == []
    assert (await _nodes(client, run_id))["draft"]["status"] == "running"
