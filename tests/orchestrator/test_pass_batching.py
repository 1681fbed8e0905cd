"""Attempts that end together are recorded together: a pass waits for the outputs being
written when it is due, a bounded time, so that one pass records them rather than two.

Attempts write their output themselves when the store is slow by nature (`inline` is false: the
network); a local store's small outputs are written with the pass that records them
(`tests/orchestrator/test_outputs_with_the_pass.py`)."""

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from apps.core.database import Transactions
from apps.core.settings import Settings
from apps.orchestrator.engine.executor import Outcome
from apps.orchestrator.engine.passes import PassResult
from apps.orchestrator.infra.storage.local import LocalArtifactStore
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_worker import _submit

# Two parallel nodes; the slow one's artifact is written only when the test lets it.
PAIR = {
    "type": "dag",
    "nodes": [
        {"key": "quick", "role": "writer", "prompt": "Write the quick part."},
        {"key": "slow", "role": "writer", "prompt": "Write the slow part."},
    ],
}


class HeldStore(LocalArtifactStore):
    """The local store, except that writing the slow node's artifact waits for `release`, and
    that outputs are written by their attempts, as a remote store's are."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writing_slow = threading.Event()
        self.release = threading.Event()

    def write(self, storage_key: str, content: bytes) -> None:
        if storage_key.endswith("/slow.md"):
            self.writing_slow.set()
            self.release.wait(10)
        super().write(storage_key, content)

    def inline(self, size: int) -> bool:
        return False


def record_passes(
    worker: Worker, on_pass: Callable[[list[str]], None] = lambda _: None
) -> list[list[str]]:
    """The node keys of the outcomes each of `worker`'s passes was given, as they happen (each
    also given to `on_pass` before its pass runs)."""
    recorded: list[list[str]] = []
    run_pass = worker._passes.run

    async def recording(outcomes: Sequence[Outcome], **options: object) -> PassResult:
        recorded.append(sorted(outcome.work.key for outcome in outcomes))
        on_pass(recorded[-1])
        return await run_pass(outcomes, **options)  # type: ignore[arg-type]

    worker._passes.run = recording  # type: ignore[method-assign]
    return recorded


async def test_an_output_being_written_joins_the_pass_of_the_one_that_ended_before_it(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    store = HeldStore(settings.artifacts_dir)
    worker = Worker(transactions, settings, store=store)
    passes = record_passes(worker)
    await _submit(client, PAIR)
    loop_ = asyncio.get_running_loop()
    # Let the slow write go a little after the quick attempt has ended: well inside the wait.
    waiting = loop_.run_in_executor(None, store.writing_slow.wait, 10)
    waiting.add_done_callback(lambda _: loop_.call_later(0.005, store.release.set))

    await worker.drain()

    assert ["quick", "slow"] in passes
    assert ["quick"] not in passes


async def test_a_write_that_takes_longer_than_the_wait_does_not_hold_the_pass(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    store = HeldStore(settings.artifacts_dir)
    worker = Worker(transactions, settings, store=store)
    # The slow write ends only once the quick outcome has a pass of its own.
    passes = record_passes(worker, lambda keys: keys == ["quick"] and store.release.set())
    await _submit(client, PAIR)

    await worker.drain()

    assert passes.index(["quick"]) < passes.index(["slow"])
