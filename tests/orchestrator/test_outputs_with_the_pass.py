"""A local store's small outputs are written by the pass that records them, off the event loop
(on SQLite in the hand-off that runs the pass, before its transaction begins; on PostgreSQL
while it runs), and are on the disk before it commits. One that cannot be written fails its
attempt, for a retry."""

import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from apps.core import database
from apps.core.database import SessionFactory, Transactions
from apps.core.errors import ServiceUnavailable
from apps.core.settings import Settings
from apps.orchestrator.engine import passes
from apps.orchestrator.engine.executor import Unstored
from apps.orchestrator.infra.storage.base import sidecar_key
from apps.orchestrator.infra.storage.local import LocalArtifactStore
from apps.orchestrator.model.models import Artifact
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.driving import run_to_the_end
from tests.orchestrator.test_worker import _submit

ONE = {"type": "dag", "nodes": [{"key": "only", "role": "writer", "prompt": "Write it."}]}


class RecordingStore(LocalArtifactStore):
    """The local store, noting the thread of each write; the first `failures` writes fail."""

    def __init__(self, root: Path, failures: int = 0) -> None:
        super().__init__(root)
        self.failures = failures
        self.threads: set[str] = set()
        self.writes: list[str] = []

    def write(self, storage_key: str, content: bytes) -> None:
        self.threads.add(threading.current_thread().name)
        self.writes.append(storage_key)
        if self.failures:
            self.failures -= 1
            raise ServiceUnavailable("the artifact store failed: No space left on device")
        super().write(storage_key, content)


def files_missing_at_commit(
    store: LocalArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The files of artifact rows that a transaction was about to commit without, as each
    commit point (`database._insert_pending`, just before the commit) finds them."""
    missing: list[str] = []
    insert_pending = database._insert_pending

    def checking(session: Session) -> None:
        for key in session.scalars(select(Artifact.storage_key)):
            missing.extend(k for k in (key, sidecar_key(key)) if not (store.root / k).is_file())
        insert_pending(session)

    monkeypatch.setattr(database, "_insert_pending", checking)
    return missing


async def test_outputs_are_on_the_disk_when_the_pass_that_records_them_commits(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = RecordingStore(settings.artifacts_dir)
    missing = files_missing_at_commit(store, monkeypatch)
    run_id = await _submit(client, {"type": "demo"})

    await Worker(transactions, settings, store=store).drain()

    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"
    assert len(store.writes) == 2 * len(
        (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    )
    assert missing == []
    assert threading.main_thread().name not in store.threads


async def test_an_output_that_cannot_be_written_fails_its_attempt_for_a_retry(
    transactions: Transactions,
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    store = RecordingStore(settings.artifacts_dir, failures=1)
    run_id = await _submit(client, ONE)

    await run_to_the_end(Worker(transactions, settings, store=store), sessions, client, run_id)

    events = (await client.get("/events", params={"run_id": run_id, "limit": 200})).json()["items"]
    retrying = [event for event in events if event["type"] == "node.retrying"]
    assert len(retrying) == 1
    assert "No space left on device" in str(retrying[0]["data"])
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    assert [artifact["name"] for artifact in artifacts] == ["only.md"]


async def test_outputs_left_by_a_failed_pass_are_not_written_again(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    store = RecordingStore(settings.artifacts_dir)
    worker = Worker(transactions, settings, store=store)
    await _submit(client, ONE)
    claimed = await transactions.run(
        passes.run_pass, [], worker=worker.name, slots=1, settings=settings
    )
    unstored = await worker.executor.call(claimed.claimed[0])
    assert isinstance(unstored, Unstored)

    first = worker.executor.store_output(unstored)
    again = worker.executor.store_output(unstored)

    assert first == again == unstored.succeeded
    key = unstored.succeeded.output.storage_key
    assert store.writes == [key, sidecar_key(key)]
