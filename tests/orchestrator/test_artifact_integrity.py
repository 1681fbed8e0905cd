"""A stored artifact's content never changes: every attempt and every edit writes files of its own,
so after retries, timeouts, edits and resumes each artifact's content still has the size and
sha256 its metadata gives, and its sidecar file still says what the API says."""

import asyncio
import hashlib
import json
import re
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings, load_settings
from apps.orchestrator.infra.providers.base import LLMReply, LLMRequest, ProviderError
from apps.orchestrator.infra.storage.base import sidecar_key
from apps.orchestrator.model.models import Artifact, Gate, utcnow
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_run_control import _nodes, _wait_for, _working
from tests.orchestrator.test_worker import _submit
from tests.s3_server import s3_settings

SPEC = {
    "type": "dag",
    "nodes": [
        {"key": "draft", "role": "writer", "prompt": "<<draft>>", "gate": {}},
        {"key": "facts", "role": "researcher", "prompt": "<<facts>>", "timeout_seconds": 0.5},
        {
            "key": "check",
            "role": "reviewer",
            "prompt": "<<check>>",
            "deps": ["facts"],
            "gate": {"timeout_minutes": 60, "on_timeout": "reject"},
        },
        {"key": "final", "role": "assembler", "prompt": "<<final>>", "deps": ["draft", "check"]},
    ],
}


@pytest.fixture(params=["local", "s3"])
def settings(
    request: pytest.FixtureRequest, settings: Settings, s3_endpoint: str, s3_bucket: str
) -> Settings:
    if request.param == "local":
        return settings
    s3 = {name.lower(): value for name, value in s3_settings(s3_endpoint, s3_bucket).items()}
    return load_settings(**{**settings.model_dump(), **s3})


class EveryAnswerDiffers:
    """Numbers every answer, so no two attempts write the same content. The first call for
    "facts" hangs past its timeout; the first for "final" fails for good (the run fails)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def complete(self, request: LLMRequest) -> LLMReply:
        # The node's own prompt comes first, before what its dependencies produced.
        match = re.search(r"<<(\w+)>>", request.prompt)
        assert match is not None
        key = match.group(1)
        self.calls[key] += 1
        if key == "facts" and self.calls[key] == 1:
            await asyncio.sleep(3600)
        if key == "final" and self.calls[key] == 1:
            raise ProviderError("refused", retryable=False)
        return LLMReply(
            text=f"# {key}, answer {self.calls[key]}\n", prompt_tokens=5, completion_tokens=5
        )


async def _node_is(client: httpx.AsyncClient, run_id: str, key: str, status: str, attempt: int):
    async def there() -> bool:
        node = (await _nodes(client, run_id))[key]
        return (node["status"], node["attempt"]) == (status, attempt)

    await _wait_for(there, seconds=20)


async def _run_is(client: httpx.AsyncClient, run_id: str, status: str) -> dict[str, Any]:
    async def there() -> dict[str, Any] | None:
        run = (await client.get(f"/runs/{run_id}")).json()
        return run if run["status"] == status else None

    return await _wait_for(there, seconds=20)


async def test_after_retries_timeouts_edits_and_resumes_every_artifact_is_what_it_says(
    app: FastAPI,
    transactions: Transactions,
    sessions: SessionFactory,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    provider = EveryAnswerDiffers()
    run_id = await _submit(client, SPEC)

    store = app.state.artifact_store
    async with _working(Worker(transactions, settings, {"demo": provider}, store)):
        await _node_is(client, run_id, "draft", "waiting_approval", 1)
        draft = (await _nodes(client, run_id))["draft"]["id"]
        retry = {"node_id": draft, "action": "retry", "notes": "more"}
        assert (await client.post(f"/runs/{run_id}/reject", json=retry)).status_code == 200
        await _node_is(client, run_id, "draft", "waiting_approval", 2)
        edit = {"node_id": draft, "patch": "# draft, edited\n"}
        assert (await client.post(f"/runs/{run_id}/approve", json=edit)).status_code == 200

        # "facts" timed out once; its retry's output is checked, and its gate times out.
        await _node_is(client, run_id, "check", "waiting_approval", 1)
        async with unit_of_work(sessions) as session:
            await session.execute(
                update(Gate)
                .where(Gate.status == "pending")
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        await _node_is(client, run_id, "check", "waiting_approval", 2)
        check = (await _nodes(client, run_id))["check"]["id"]
        approve = {"node_id": check}
        assert (await client.post(f"/runs/{run_id}/approve", json=approve)).status_code == 200

        await _run_is(client, run_id, "failed")
        assert (await client.post(f"/runs/{run_id}/resume")).status_code == 202
        await _run_is(client, run_id, "succeeded")

    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    names = Counter(artifact["name"] for artifact in artifacts)
    assert names == {"draft.md": 3, "facts.md": 1, "check.md": 2, "final.md": 1}
    async with sessions() as session:
        keys = dict((await session.execute(select(Artifact.id, Artifact.storage_key))).all())
    for artifact in artifacts:
        content = (await client.get(f"/artifacts/{artifact['id']}/content")).content
        assert hashlib.sha256(content).hexdigest() == artifact["sha256"], artifact["name"]
        assert len(content) == artifact["size"]
        key = keys[uuid.UUID(artifact["id"])]
        # A listed sidecar leaves its prompts to the artifact itself.
        whole = (await client.get(f"/artifacts/{artifact['id']}")).json()
        assert json.loads(store.read(sidecar_key(key))) == whole["sidecar"]
    texts = {(await client.get(f"/artifacts/{a['id']}/content")).text for a in artifacts}
    assert len(texts) == len(artifacts)
