"""A decision's artifact-store I/O (reading the gated artifact, writing an edit, reading an outline
to plan from) runs in a thread, outside its transaction: a slow store holds up neither the event
loop nor the database. Files written for an edit whose transaction does not commit are removed.

Each test runs on the local store and on the S3 store (the moto server), slowed down."""

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from apps.core.database import SessionFactory, Transactions
from apps.core.settings import Settings, load_settings
from apps.orchestrator.infra.storage.base import ArtifactStore, StoredContent
from apps.orchestrator.model.models import Artifact
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_run_control import GATED_DAG, _nodes
from tests.orchestrator.test_worker import _submit
from tests.s3_server import bucket_keys, s3_client, s3_settings

# How long a held store call waits to be released before it goes on by itself.
HOLD_SECONDS = 3.0


@pytest.fixture(params=["local", "s3"])
def settings(
    request: pytest.FixtureRequest,
    settings: Settings,
    s3_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
) -> Settings:
    """Settings with the outline of a report gated, on the local store or in a bucket."""
    policy = tmp_path / "gates.yaml"
    policy.write_text("gates:\n  outline:\n    required: true\n")
    s3 = {}
    if request.param == "s3":
        s3 = {name.lower(): value for name, value in s3_settings(s3_endpoint, s3_bucket).items()}
    return load_settings(**{**settings.model_dump(), **s3, "gate_policy_file": policy})


class HeldStore:
    """The real store, whose calls wait until the test releases them (a store that answers
    slowly, as a distant bucket does), or until `HOLD_SECONDS` have passed."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.entered = threading.Event()
        self.released = threading.Event()
        self.gave_up_waiting = False

    def _hold(self) -> None:
        self.entered.set()
        if not self.released.wait(HOLD_SECONDS):
            self.gave_up_waiting = True

    def read(self, storage_key: str) -> bytes:
        self._hold()
        return self.store.read(storage_key)

    def exists(self, storage_key: str) -> bool:
        self._hold()
        return self.store.exists(storage_key)

    def write(self, storage_key: str, content: bytes) -> None:
        self._hold()
        self.store.write(storage_key, content)

    def delete(self, storage_key: str) -> None:
        self._hold()
        self.store.delete(storage_key)

    def open(self, storage_key: str) -> StoredContent:
        return self.store.open(storage_key)

    def location(self, storage_key: str) -> str:
        return self.store.location(storage_key)

    def inline(self, size: int) -> bool:
        return False

    async def while_held(self, request: Awaitable[httpx.Response]) -> httpx.Response:
        """Wait until a call is held, send `request`, then release the store; its answer,
        which must have come while the call was still held."""
        assert await asyncio.to_thread(self.entered.wait, HOLD_SECONDS)
        try:
            response = await request
            assert not self.gave_up_waiting, "the request waited for the store's call"
        finally:
            self.released.set()
        return response


@pytest.fixture
def held_store(app: FastAPI) -> Iterator[HeldStore]:
    """The API's artifact store, holding every call until released."""
    real = app.state.artifact_store
    app.state.artifact_store = HeldStore(real)
    yield app.state.artifact_store
    app.state.artifact_store = real


def _stored_keys(settings: Settings) -> set[str]:
    if settings.artifact_store == "s3":
        assert settings.artifact_s3_endpoint_url and settings.artifact_s3_bucket
        return bucket_keys(settings.artifact_s3_endpoint_url, settings.artifact_s3_bucket)
    root = settings.artifacts_dir
    return {str(path.relative_to(root)) for path in root.rglob("*")}


async def test_an_edited_outline_is_approved_without_holding_the_loop_or_the_database(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
    held_store: HeldStore,
) -> None:
    run_id = await _submit(client, {"type": "report", "sections": 3})
    await Worker(transactions, settings, store=held_store.store).drain()
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "waiting"
    patch = {"sections": [{"title": "The only section", "brief": "All of it."}]}

    approval = asyncio.create_task(client.post(f"/runs/{run_id}/approve", json={"patch": patch}))
    # A write to the database, and an answer from the event loop, while the store is slow.
    submitted = await held_store.while_held(
        client.post("/tasks", json={"title": "Meanwhile", "task_spec": {"type": "demo"}})
    )
    approved = await approval

    assert submitted.status_code == 202
    assert approved.status_code == 200, approved.text
    # Planned from the outline as edited: one section where the planner wrote three.
    assert sorted(await _nodes(client, run_id)) == ["assemble", "outline", "review", "section-1"]


async def test_an_edit_whose_decision_lost_leaves_no_file_behind(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
    held_store: HeldStore,
) -> None:
    run_id = await _submit(client, GATED_DAG)
    await Worker(transactions, settings, store=held_store.store).drain()
    before = _stored_keys(settings)

    approval = asyncio.create_task(
        client.post(f"/runs/{run_id}/approve", json={"patch": "# Edited\n"})
    )
    rejected = await held_store.while_held(
        client.post(f"/runs/{run_id}/reject", json={"action": "fail"})
    )
    approved = await approval

    assert rejected.status_code == 200, rejected.text
    assert approved.status_code == 409
    assert "already rejected by admin" in approved.json()["detail"]
    assert _stored_keys(settings) == before
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    assert [artifact["name"] for artifact in artifacts] == ["draft.md"]


# As it is, the output would be read by the nodes after it, which could only fail.
APPROVALS = [pytest.param({"patch": "# Edited\n"}, id="edited"), pytest.param({}, id="as-is")]


@pytest.mark.parametrize("approval", APPROVALS)
async def test_an_approval_of_content_missing_from_the_store_is_409_and_changes_nothing(
    approval: dict[str, str],
    app: FastAPI,
    sessions: SessionFactory,
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _submit(client, GATED_DAG)
    await Worker(transactions, settings).drain()
    async with sessions() as session:
        (key,) = (await session.scalars(select(Artifact.storage_key))).all()
    app.state.artifact_store.delete(key)

    response = await client.post(f"/runs/{run_id}/approve", json=approval)

    assert response.status_code == 409, response.text
    assert "missing from the artifact store" in response.json()["detail"]
    (gate,) = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    assert gate["status"] == "pending"
    assert not any("edited-" in stored for stored in _stored_keys(settings))


@pytest.mark.parametrize("approval", APPROVALS)
@pytest.mark.parametrize("settings", ["s3"], indirect=True)
async def test_an_approval_the_store_cannot_serve_is_503_and_changes_nothing(
    approval: dict[str, str],
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_id = await _submit(client, GATED_DAG)
    await Worker(transactions, settings).drain()
    assert settings.artifact_s3_endpoint_url and settings.artifact_s3_bucket
    s3 = s3_client(settings.artifact_s3_endpoint_url)
    for key in _stored_keys(settings):
        s3.delete_object(Bucket=settings.artifact_s3_bucket, Key=key)
    s3.delete_bucket(Bucket=settings.artifact_s3_bucket)

    response = await client.post(f"/runs/{run_id}/approve", json=approval)

    assert response.status_code == 503, response.text
    (gate,) = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    assert gate["status"] == "pending"
