"""A gate whose timeout cannot be carried out stops nothing else: the worker goes on deciding the
other expired gates, renewing its leases and watching cancels, and tries that gate again later."""

import asyncio
import logging
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings, load_settings
from apps.orchestrator.infra.providers.base import LLMReply, LLMRequest
from apps.orchestrator.infra.providers.demo import DemoProvider
from apps.orchestrator.model.models import Artifact, Gate, Node, utcnow
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_cancel_outcomes import _ended
from tests.orchestrator.test_run_control import _nodes, _working
from tests.orchestrator.test_worker import _submit

LEASE_SECONDS = 1.0
ON_TIMEOUT_APPROVE = {"timeout_minutes": 60, "on_timeout": "approve"}


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """Short leases, and the outline of a report gated, approved when it times out."""
    policy = tmp_path / "gates.yaml"
    policy.write_text(
        "gates:\n  outline:\n    required: true\n    timeout_minutes: 60\n    on_timeout: approve\n"
    )
    return load_settings(
        **{**settings.model_dump(), "gate_policy_file": policy, "lease_seconds": LEASE_SECONDS}
    )


class HangsOnMarker:
    """The demo provider, except that a call whose prompt holds "<<hang>>" never answers."""

    async def complete(self, request: LLMRequest) -> LLMReply:
        if "<<hang>>" in request.prompt:
            await asyncio.Event().wait()
        return await DemoProvider(0).complete(request)


async def _expire(sessions: SessionFactory, run_id: str, seconds_ago: float) -> None:
    async with unit_of_work(sessions) as session:
        await session.execute(
            update(Gate)
            .where(Gate.run_id == uuid.UUID(run_id))
            .values(expires_at=utcnow() - timedelta(seconds=seconds_ago))
        )


async def test_a_gate_whose_timeout_fails_holds_up_no_other_gate_lease_or_cancel(
    app: FastAPI,
    transactions: Transactions,
    sessions: SessionFactory,
    client: httpx.AsyncClient,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = HangsOnMarker()
    report = await _submit(client, {"type": "report", "sections": 2})
    gated = {"key": "draft", "role": "writer", "prompt": "Draft.", "gate": ON_TIMEOUT_APPROVE}
    dag = await _submit(client, {"type": "dag", "nodes": [gated]})
    await Worker(transactions, settings, {"demo": provider}).drain()
    # The outline to plan from is gone: approving it when it times out cannot be done.
    async with sessions() as session:
        (outline_key,) = (
            await session.scalars(
                select(Artifact.storage_key).where(Artifact.run_id == uuid.UUID(report))
            )
        ).all()
    app.state.artifact_store.delete(outline_key)
    await _expire(sessions, report, seconds_ago=10)
    await _expire(sessions, dag, seconds_ago=5)
    hanging = {"key": "wait", "role": "writer", "prompt": "<<hang>>"}
    hung = await _submit(client, {"type": "dag", "nodes": [hanging]})

    async with _working(Worker(transactions, settings, {"demo": provider})):
        assert (await _ended(client, dag))["status"] == "succeeded"
        await asyncio.sleep(3 * LEASE_SECONDS)
        async with sessions() as session:
            lease = await session.scalar(
                select(Node.lease_expires_at).where(Node.run_id == uuid.UUID(hung))
            )
        assert lease is not None and lease > utcnow()
        assert (await _nodes(client, hung))["wait"]["attempt"] == 1
        assert (await client.post(f"/runs/{hung}/cancel")).status_code == 202
        assert (await _ended(client, hung))["status"] == "cancelled"

    (outline_gate,) = (await client.get("/gates", params={"run_id": report})).json()["items"]
    assert outline_gate["status"] == "pending"
    (dag_gate,) = (await client.get("/gates", params={"run_id": dag})).json()["items"]
    assert (dag_gate["status"], dag_gate["decided_by"]) == ("approved", "timeout")
    (warning,) = [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING and outline_gate["id"] in record.getMessage()
    ]
    assert "missing from the artifact store" in warning.getMessage()
