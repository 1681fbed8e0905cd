"""A worker logs what its passes recorded that an operator must hear of: each failed attempt,
whether it is retried, and each run it ended. A failure the deployment must fix (an artifact
store that cannot be written) is an error, tagged with its run and node; a provider's failure is
a warning, which the retry policy deals with. Each failed attempt is counted by its cause."""

import logging
import shutil
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import REGISTRY

from apps.core.database import SessionFactory, Transactions
from apps.core.logs import ContextFilter
from apps.core.settings import Settings
from apps.orchestrator.worker import pass_log
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.driving import run_to_the_end
from tests.orchestrator.test_worker import FailingProvider, _submit

ONE = {
    "type": "dag",
    "nodes": [{"key": "only", "role": "writer", "prompt": "Write it.", "max_attempts": 2}],
}


def failed_attempts(cause: str) -> float:
    """The failed attempts of `cause` this process has counted."""
    return REGISTRY.get_sample_value("crew_node_attempts_failed_total", {"cause": cause}) or 0.0


class PassLines:
    """The records `pass_log` writes during a test, with the ids bound when each was written."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    @property
    def records(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.name == pass_log.__name__]

    def lines(self) -> list[tuple[str, str]]:
        return [(record.levelname, record.getMessage()) for record in self.records]


@pytest.fixture
def pass_lines(caplog: pytest.LogCaptureFixture) -> Iterator[PassLines]:
    logger = logging.getLogger(pass_log.__name__)
    context = ContextFilter()
    logger.addFilter(context)
    caplog.set_level(logging.INFO, logger=pass_log.__name__)
    yield PassLines(caplog)
    logger.removeFilter(context)


async def test_an_artifact_store_that_cannot_be_written_is_an_error_of_the_run_and_node(
    transactions: Transactions,
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
    pass_lines: PassLines,
) -> None:
    counted_before = failed_attempts("artifact_store")
    worker = Worker(transactions, settings)
    # The store's directory is a file now: every write fails as a full or broken disk would.
    shutil.rmtree(settings.artifacts_dir, ignore_errors=True)
    settings.artifacts_dir.write_text("not a directory")
    run_id = await _submit(client, ONE)

    run = await run_to_the_end(worker, sessions, client, run_id)

    assert run["status"] == "failed"
    node = (await client.get(f"/runs/{run_id}/nodes")).json()["items"][0]
    cause = "artifact store: the artifact store failed: Not a directory"
    assert pass_lines.lines() == [
        (
            "ERROR",
            f"attempt 1 of 2 of node 'only' failed (artifact_store), it will be retried: {cause}",
        ),
        (
            "ERROR",
            f"attempt 2 of 2 of node 'only' failed (artifact_store), the node failed: {cause}",
        ),
        ("WARNING", f"run failed: node 'only' failed after 2 attempt(s): {cause}"),
    ]
    attempts, ended = pass_lines.records[:2], pass_lines.records[2]
    assert {(record.run_id, record.node_id) for record in attempts} == {(run_id, node["id"])}
    assert (ended.run_id, ended.node_id) == (run_id, None)
    assert failed_attempts("artifact_store") - counted_before == 2


async def test_a_providers_failure_is_a_warning_and_each_retry_says_so(
    transactions: Transactions,
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
    pass_lines: PassLines,
) -> None:
    run_id = await _submit(client, {"type": "demo"})
    provider = FailingProvider("Write part 2 of", retryable=True)

    await run_to_the_end(
        Worker(transactions, settings, {"demo": provider}), sessions, client, run_id
    )

    said = "upstream said no"
    assert pass_lines.lines() == [
        (
            "WARNING",
            f"attempt 1 of 3 of node 'write-2' failed (provider), it will be retried: {said}",
        ),
        (
            "WARNING",
            f"attempt 2 of 3 of node 'write-2' failed (provider), it will be retried: {said}",
        ),
        ("WARNING", f"attempt 3 of 3 of node 'write-2' failed (provider), the node failed: {said}"),
        ("WARNING", f"run failed: node 'write-2' failed after 3 attempt(s): {said}"),
    ]


async def test_a_run_that_succeeds_is_one_line_and_its_nodes_none(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
    pass_lines: PassLines,
) -> None:
    run_id = await _submit(client, {"type": "demo"})

    await Worker(transactions, settings).drain()

    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "succeeded"
    assert pass_lines.lines() == [("INFO", "run succeeded")]
    assert pass_lines.records[0].run_id == run_id
