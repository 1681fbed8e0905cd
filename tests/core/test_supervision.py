"""A supervised background task that fails is logged, reported to Sentry and started again after
a delay that grows up to a bound; the database being out of reach is a warning, not a fault to
report, and a long outage is a few lines, not one per restart."""

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
import sentry_sdk
from sqlalchemy.exc import OperationalError

from apps.core import supervision
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


def _unreachable(message: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError(message))


class Scripted:
    """One step of its script per start: a step runs for its seconds, then fails with its error;
    after the last step it runs until cancelled. Records when each start happened."""

    def __init__(self, *steps: tuple[float, Exception]) -> None:
        self.steps = list(steps)
        self.starts: list[float] = []
        self.running = asyncio.Event()

    async def __call__(self) -> None:
        self.starts.append(time.monotonic())
        if len(self.starts) > len(self.steps):
            self.running.set()
            await asyncio.Event().wait()
        seconds, error = self.steps[len(self.starts) - 1]
        await asyncio.sleep(seconds)
        raise error


def _lines_of(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(name)]


async def test_the_delay_doubles_up_to_its_bound_and_starts_over_after_a_run_without_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="apps.core.supervision")
    fail_at_once = (0.0, _unreachable("refused"))
    # Six failures in a row; then a start that runs longer than the bound before it fails.
    work = Scripted(*[fail_at_once] * 6, (0.5, _unreachable("reset")))
    task = start_supervised("gate timer", work, first_delay=0.05, max_delay=0.2)
    try:
        await asyncio.wait_for(work.running.wait(), 10)
    finally:
        task.cancel()

    said = [r.getMessage() for r in _lines_of(caplog, "gate timer") if "restarting" in r.msg]
    delays = [float(message.split("restarting in ")[1].split("s:")[0]) for message in said]
    # Doubled up to the bound (not 0.4, 0.8, 1.6), then from the first delay again.
    assert delays == [0.05, 0.1, 0.2, 0.2, 0.2, 0.2, 0.05]
    gaps = [later - earlier for earlier, later in zip(work.starts, work.starts[1:], strict=False)]
    waits = [*gaps[:-1], gaps[-1] - 0.5]
    # Never sooner than said; later only by what a loaded machine's loop stalls.
    assert all(delay <= wait < delay + 0.4 for delay, wait in zip(delays, waits, strict=True))


async def test_a_streak_of_database_faults_warns_once_and_says_when_it_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="apps.core.supervision")
    streak = [(0.0, _unreachable(f"refused {n}")) for n in range(3)]
    work = Scripted(*streak, (0.0, RuntimeError("a bug")), *streak)
    with sentry_sink() as (sink, dsn):
        init_sentry(load_settings(_env_file=None, sentry_dsn=dsn))
        # A bound far above a loaded machine's stalls: a start that stalls past it while
        # failing would end the streak early.
        task = start_supervised("worker passes", work, first_delay=0.01, max_delay=0.5)
        try:
            await asyncio.wait_for(work.running.wait(), 10)
            # Longer than the bound: the start that runs ends the streak.
            await asyncio.sleep(1.0)
        finally:
            task.cancel()
        sentry_sdk.flush()
        events = await asyncio.to_thread(sink.wait_for_events, 1)

    lines = _lines_of(caplog, "worker passes")
    assert [r.levelno for r in lines] == [
        logging.WARNING,
        *[logging.DEBUG] * 2,
        logging.ERROR,
        *[logging.DEBUG] * 3,
        logging.INFO,
    ]
    assert lines[0].getMessage() == (
        "worker passes failed, restarting in 0.01s: ConnectionRefusedError: refused 0"
    )
    assert lines[1].getMessage().startswith("worker passes failed again, restarting in 0.02s")
    assert lines[3].exc_info and lines[3].exc_info[1] is work.steps[3][1]
    assert (
        lines[-1]
        .getMessage()
        .startswith("worker passes is running again, after 7 failure(s) in a row over")
    )
    # The unexpected error is reported, the database's faults are not.
    ours = [event for event in events if event["tags"].get("task") == "worker passes"]
    assert [event["exception"]["values"][-1]["value"] for event in ours] == ["a bug"]


async def test_a_long_streak_of_database_faults_warns_again_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervision, "STILL_FAILING_LOG_SECONDS", 0.25)
    work = Scripted(*[(0.0, _unreachable("refused"))] * 30)
    task = start_supervised("event feed", work, first_delay=0.01, max_delay=0.02)
    try:
        await asyncio.wait_for(work.running.wait(), 5)
    finally:
        task.cancel()

    warnings = [r.getMessage() for r in _lines_of(caplog, "event feed")]
    # 30 failures about 0.02 s apart (longer on a loaded machine): the first warning, then one a
    # quarter second at most.
    lasted = work.starts[-1] - work.starts[0]
    assert 2 <= len(warnings) <= 2 + lasted / 0.25, (lasted, warnings)
    assert warnings[0].startswith("event feed failed, restarting in 0.01s")
    assert all(
        message.startswith("event feed still failing (") and "refused" in message
        for message in warnings[1:]
    )


async def test_a_database_that_flaps_is_not_a_warning_per_blink(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="apps.core.supervision")
    # Each start after the first runs past the bound, then fails: a streak of one per blink.
    blink = (0.15, _unreachable("reset"))
    work = Scripted((0.0, _unreachable("refused")), blink, blink, blink)
    task = start_supervised("worker leases", work, first_delay=0.01, max_delay=0.05)
    try:
        await asyncio.wait_for(work.running.wait(), 5)
        await asyncio.sleep(0.2)
    finally:
        task.cancel()

    lines = _lines_of(caplog, "worker leases")
    said = [(r.levelno, r.getMessage().split(",")[0]) for r in lines if r.levelno > logging.DEBUG]
    assert said == [
        (logging.WARNING, "worker leases failed"),
        (logging.INFO, "worker leases is running again"),
    ]
    assert len(lines) == 8


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
