"""An output's files are on the disk before the pass that records it commits, written off the
event loop: on PostgreSQL while the pass runs, its transaction held open for them only briefly
(past that it is rolled back and made again once they are written); on SQLite by the writing
thread before the transaction begins. A slow disk stalls no event loop; a write that raised is
made again by the next pass."""

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from apps.core.database import Transactions
from apps.core.settings import Settings
from apps.orchestrator.engine import executor
from apps.orchestrator.infra.storage.local import LocalArtifactStore
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_outputs_with_the_pass import files_missing_at_commit
from tests.orchestrator.test_worker import _submit

CHAIN = {
    "type": "dag",
    "nodes": [
        {"key": "first", "role": "writer", "prompt": "Write it."},
        {"key": "second", "role": "writer", "prompt": "Go on.", "deps": ["first"]},
        {"key": "third", "role": "writer", "prompt": "End it.", "deps": ["second"]},
    ],
}
SLOW_WRITE_SECONDS = 0.1
FIRST_WRITE_SECONDS = 0.5


class SlowStore(LocalArtifactStore):
    """The local store on a disk that takes `SLOW_WRITE_SECONDS` for each file."""

    def write(self, storage_key: str, content: bytes) -> None:
        time.sleep(SLOW_WRITE_SECONDS)
        super().write(storage_key, content)


class RaisesWhileFailing(LocalArtifactStore):
    """The local store, whose writes fail with an error that is no store's while `failing`."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failing = True

    def write(self, storage_key: str, content: bytes) -> None:
        if self.failing:
            raise RuntimeError("the store's code failed")
        super().write(storage_key, content)


async def _longest_stall(work: asyncio.Future[None]) -> float:
    """The longest time the event loop did not come back to a ticking task while `work` ran."""
    longest, last = 0.0, time.perf_counter()
    while not work.done():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    await work
    return longest


async def test_a_slow_disk_holds_the_commit_back_and_not_the_event_loop(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = SlowStore(settings.artifacts_dir)
    missing = files_missing_at_commit(store, monkeypatch)
    run_id = await _submit(client, CHAIN)

    drain = asyncio.ensure_future(Worker(transactions, settings, store=store).drain())
    stall = await _longest_stall(drain)

    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"
    assert missing == []
    # Each output's two files take 0.2 s, a wait the loop never shares.
    assert stall < SLOW_WRITE_SECONDS


async def test_a_write_that_raised_is_made_again_by_the_next_pass(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    store = RaisesWhileFailing(settings.artifacts_dir)
    worker = Worker(transactions, settings, store=store)
    run_id = await _submit(client, CHAIN)

    with pytest.raises(RuntimeError, match="the store's code failed"):
        await worker.drain()
    store.failing = False
    await worker.drain()

    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"
    artifacts = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    assert [artifact["name"] for artifact in artifacts] == ["first.md", "second.md", "third.md"]
    for artifact in artifacts:
        content = await client.get(f"/artifacts/{artifact['id']}/content")
        assert content.status_code == 200
        assert content.headers["content-length"] == str(artifact["size"])


class FirstWriteSlow(LocalArtifactStore):
    """The local store, whose first write takes `FIRST_WRITE_SECONDS` and says when it began."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writing = threading.Event()

    def write(self, storage_key: str, content: bytes) -> None:
        if not self.writing.is_set():
            self.writing.set()
            time.sleep(FIRST_WRITE_SECONDS)
        super().write(storage_key, content)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_slow_disk_holds_no_lock_of_the_run_it_writes_for(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    """PostgreSQL's pass writes its files while it runs, and does not hold its transaction
    open for long once its work is done. (SQLite's writes them on its one writing thread before
    the transaction begins: a write waits for that thread either way.)"""
    store = FirstWriteSlow(settings.artifacts_dir)
    run_id = await _submit(client, CHAIN)
    drain = asyncio.ensure_future(Worker(transactions, settings, store=store).drain())
    await asyncio.to_thread(store.writing.wait, 10)

    started = time.perf_counter()
    cancel = await client.post(f"/runs/{run_id}/cancel")
    answered = time.perf_counter() - started
    await drain

    assert cancel.status_code == 202
    # The first output's files take 0.5 s: the cancel waits for no transaction that waits for
    # them (a busy machine's cancel may take a while, but not that).
    assert answered < FIRST_WRITE_SECONDS / 2
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "cancelled"


class CountingStore(LocalArtifactStore):
    """The local store, counting the contents it reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def read(self, storage_key: str) -> bytes:
        self.reads.append(storage_key)
        return super().read(storage_key)


def _prompt(settings: Settings, run_id: str, name: str) -> str:
    """The prompt of the output `name` of the run, from its sidecar's file."""
    (sidecar,) = (settings.artifacts_dir / run_id).glob(f"1/{name}.sidecar.json")
    return json.loads(sidecar.read_text())["prompts"]["user"]


@pytest.mark.parametrize("kept_bytes", [executor.RECENT_OUTPUT_BYTES, 0])
async def test_a_chain_reads_what_its_worker_wrote_last_from_memory_and_the_rest_from_the_store(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    kept_bytes: int,
) -> None:
    monkeypatch.setattr(executor, "RECENT_OUTPUT_BYTES", kept_bytes)
    store = CountingStore(settings.artifacts_dir)
    run_id = await _submit(client, CHAIN)

    await Worker(transactions, settings, store=store).drain()

    assert len(store.reads) == (0 if kept_bytes else 2)
    for earlier, later in (("first", "second"), ("second", "third")):
        (output,) = (settings.artifacts_dir / run_id).glob(f"1/{earlier}.md")
        expected = f"### Output of {earlier}\n\n{output.read_text()}"
        assert expected in _prompt(settings, run_id, f"{later}.md")
