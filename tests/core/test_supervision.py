"""A supervised background task that fails is logged, reported to Sentry and started again after
a delay that grows; the database being out of reach is a warning, not a fault to report."""

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
import sentry_sdk
from sqlalchemy.exc import OperationalError

from apps.core.error_reporting import init_sentry
from apps.core.settings import load_settings
from apps.core.supervision import start_supervised, supervised
from tests.sentry_sink import sentry_sink


class Flaky:
    """Fails `failures` times (each with the error `make_error` gives), then runs until
    cancelled; records when each start happened."""

    def __init__(
        self, failures: int, make_error: Callable[[str], Exception] = RuntimeError
    ) -> None:
        self.failures = failures
        self.make_error = make_error
        self.starts: list[float] = []
        self.running = asyncio.Event()

    async def __call__(self) -> None:
        self.starts.append(time.monotonic())
        if len(self.starts) <= self.failures:
            raise self.make_error(f"failure {len(self.starts)}")
        self.running.set()
        await asyncio.Event().wait()


async def test_a_failing_task_is_logged_reported_and_restarted_with_growing_delays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = Flaky(failures=3)
    with sentry_sink() as (sink, dsn):
        init_sentry(load_settings(_env_file=None, sentry_dsn=dsn))
        task = start_supervised("lease keeper", work, first_delay=0.05, max_delay=1.0)
        try:
            await asyncio.wait_for(work.running.wait(), 5)
        finally:
            task.cancel()
        sentry_sdk.flush()
        events = await asyncio.to_thread(sink.wait_for_events, 3)

    gaps = [later - earlier for earlier, later in zip(work.starts, work.starts[1:], strict=False)]
    # 0.05 s after the first failure, then twice as long after each next one.
    assert all(want <= gap < want + 2 for want, gap in zip([0.05, 0.1, 0.2], gaps, strict=True))
    failures = [r for r in caplog.records if "lease keeper" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.ERROR] * 3
    assert all(r.exc_info and "lease keeper failed" in r.getMessage() for r in failures)
    ours = [event for event in events if event["tags"].get("task") == "lease keeper"]
    messages = [event["exception"]["values"][-1]["value"] for event in ours]
    assert messages == ["failure 1", "failure 2", "failure 3"]
    assert task.cancelled() or task.done()


async def test_the_database_out_of_reach_is_a_warning_and_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def unreachable(message: str) -> OperationalError:
        return OperationalError("SELECT 1", {}, ConnectionRefusedError(message))

    work = Flaky(failures=1, make_error=unreachable)
    with sentry_sink() as (sink, dsn):
        init_sentry(load_settings(_env_file=None, sentry_dsn=dsn))
        task = start_supervised("event feed", work, first_delay=0.01)
        try:
            await asyncio.wait_for(work.running.wait(), 5)
        finally:
            task.cancel()
        sentry_sdk.flush()

    (warning,) = [r for r in caplog.records if "event feed failed" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "event feed failed, restarting" in warning.getMessage()
    assert sink.events() == []


async def test_a_task_that_returns_is_started_again() -> None:
    starts = 0
    again = asyncio.Event()

    async def returns() -> None:
        nonlocal starts
        starts += 1
        if starts == 2:
            again.set()

    task = start_supervised("watch", returns, first_delay=0.01)
    try:
        await asyncio.wait_for(again.wait(), 5)
    finally:
        task.cancel()
    assert starts >= 2


async def test_cancelling_a_supervised_task_stops_it() -> None:
    work = Flaky(failures=0)
    task = start_supervised("worker", work)
    await asyncio.wait_for(work.running.wait(), 5)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(work.starts) == 1


async def test_a_task_that_fails_while_being_stopped_is_not_started_again() -> None:
    stopping = asyncio.Event()
    starts = 0

    async def fails_on_cancel() -> None:
        nonlocal starts
        starts += 1
        try:
            stopping.set()
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("could not hand the nodes back")

    task = start_supervised("worker", fails_on_cancel, first_delay=0.01)
    await asyncio.wait_for(stopping.wait(), 5)

    task.cancel()

    with pytest.raises(RuntimeError, match="could not hand the nodes back"):
        await asyncio.wait_for(task, 5)
    assert starts == 1


async def test_supervised_work_restarts_inside_the_block_and_stops_when_it_ends() -> None:
    work = Flaky(failures=1)
    async with supervised("stream-key-revocations", work, first_delay=0.01):
        await asyncio.wait_for(work.running.wait(), 5)
        task = next(t for t in asyncio.all_tasks() if t.get_name() == "stream-key-revocations")
    assert len(work.starts) == 2
    assert task.cancelled()
