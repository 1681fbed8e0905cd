"""A local store's small outputs are written with the pass that records them: before its
transaction begins, off the event loop, in the hand-off that runs the pass. One that cannot be
written fails its attempt, for a retry, in that same pass."""

import threading
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from apps.core.database import SessionFactory, Transactions
from apps.core.errors import ServiceUnavailable
from apps.core.settings import Settings
from apps.orchestrator.engine import passes
from apps.orchestrator.engine.executor import Outcome, Succeeded, Unstored
from apps.orchestrator.infra.storage.base import sidecar_key
from apps.orchestrator.infra.storage.local import LocalArtifactStore
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


async def test_outputs_are_on_the_disk_when_the_pass_that_records_them_runs(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = RecordingStore(settings.artifacts_dir)
    missing: list[str] = []
    run_pass = passes.run_pass

    def checking(session: object, outcomes: Sequence[Outcome], **options: object) -> object:
        for outcome in outcomes:
            assert isinstance(outcome, Succeeded)
            key = outcome.output.storage_key
            missing.extend(k for k in (key, sidecar_key(key)) if not (store.root / k).is_file())
        return run_pass(session, outcomes, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(passes, "run_pass", checking)
    run_id = await _submit(client, {"type": "demo"})

    await Worker(transactions, settings, store=store).drain()

    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"
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

    first = worker.executor.store_outputs([unstored])
    again = worker.executor.store_outputs([unstored])

    assert first == again == [unstored.succeeded]
    key = unstored.succeeded.output.storage_key
    assert store.writes == [key, sidecar_key(key)]
