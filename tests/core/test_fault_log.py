"""A loop that keeps failing for the database says it a few times an outage: a warning at the
start, at most one per interval with how long it has lasted, debug lines between, and a line
when it works again."""

import asyncio
import logging

import pytest

from apps.core.fault_log import FaultStreak

logger = logging.getLogger("tests.fault_log")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=logger.name)
    return caplog


def said(lines: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in lines.records if r.name == logger.name]


def test_a_streak_warns_first_then_once_per_interval_and_debug_between(
    lines: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    streak = FaultStreak("listener", logger, interval=60, clock=clock)
    # A fault a second for 150 s.
    for _ in range(151):
        streak.transient("trying again in %gs: %s", 1, "ConnectionRefusedError: refused")
        clock.now += 1

    loud = [(level, text) for level, text in said(lines) if level > logging.DEBUG]
    assert loud == [
        (logging.WARNING, "listener failed, trying again in 1s: ConnectionRefusedError: refused"),
        (
            logging.WARNING,
            "listener still failing (61 times in 60s), trying again in 1s: "
            "ConnectionRefusedError: refused",
        ),
        (
            logging.WARNING,
            "listener still failing (121 times in 120s), trying again in 1s: "
            "ConnectionRefusedError: refused",
        ),
    ]
    debug = [text for level, text in said(lines) if level == logging.DEBUG]
    assert len(debug) == 151 - 3
    assert debug[0] == "listener failed again, trying again in 1s: ConnectionRefusedError: refused"


def test_the_end_of_a_streak_that_warned_is_an_info_line(lines: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    streak = FaultStreak("listener", logger, interval=60, clock=clock)
    streak.transient("trying again: %s", "reset")
    clock.now += 42
    streak.transient("trying again: %s", "reset")
    clock.now += 3

    streak.over()

    assert said(lines)[-1] == (
        logging.INFO,
        "listener is running again, after 2 failure(s) in a row over 45s",
    )
    assert streak.failures == 0


def test_working_without_a_streak_says_nothing(lines: pytest.LogCaptureFixture) -> None:
    streak = FaultStreak("listener", logger, clock=Clock())

    streak.over()
    streak.over()

    assert said(lines) == []


def test_the_end_is_measured_from_when_the_work_started_again(
    lines: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    streak = FaultStreak("task", logger, clock=clock)
    streak.transient("restarting")
    clock.now += 30

    # Told late (the supervisor waits for a run without failure) when it started again.
    streak.over(at=clock.now - 20)

    assert said(lines)[-1][1] == "task is running again, after 1 failure(s) in a row over 10s"


def test_a_database_that_flaps_warns_once_per_interval_across_streaks(
    lines: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    streak = FaultStreak("listener", logger, interval=60, clock=clock)
    # Down for a second, up for four, for 100 s: twenty streaks of one fault.
    for _ in range(20):
        streak.transient("trying again")
        clock.now += 1
        streak.over()
        clock.now += 4

    loud = [(level, text.split(",")[0]) for level, text in said(lines) if level > logging.DEBUG]
    # The first blink and the one 60 s on; their recoveries. The others are debug lines.
    blink = [(logging.WARNING, "listener failed"), (logging.INFO, "listener is running again")]
    assert loud == blink * 2
    assert len(said(lines)) == 40


def test_an_unexpected_failure_makes_the_end_of_a_quiet_streak_an_info_line(
    lines: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    streak = FaultStreak("listener", logger, interval=60, clock=clock)
    streak.transient("trying again")
    streak.over()
    clock.now += 5
    # Within the interval: a debug line; then an error its caller logged itself.
    streak.transient("trying again")
    streak.unexpected()

    streak.over()

    assert said(lines)[2:] == [
        (logging.DEBUG, "listener failed again, trying again"),
        (logging.INFO, "listener is running again, after 2 failure(s) in a row over 0s"),
    ]


def test_a_streak_of_faults_said_at_debug_ends_at_debug(
    lines: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    streak = FaultStreak("listener", logger, interval=60, clock=clock)
    streak.transient("trying again")
    streak.over()
    clock.now += 5
    streak.transient("trying again")

    streak.over()

    assert said(lines)[-1][0] == logging.DEBUG
    assert said(lines)[-1][1].startswith("listener is running again")


async def test_by_default_it_measures_the_event_loops_time(
    lines: pytest.LogCaptureFixture,
) -> None:
    streak = FaultStreak("listener", logger, interval=0.05)
    for _ in range(12):
        streak.transient("trying again")
        await asyncio.sleep(0.01)
    streak.over()

    loud = [text for level, text in said(lines) if level == logging.WARNING]
    # Some 0.12 s of faults 0.01 s apart: the first, then one or two 0.05 s apart.
    assert 2 <= len(loud) <= 3, loud
    assert loud[0] == "listener failed, trying again"
    assert all(text.startswith("listener still failing (") for text in loud[1:])
    assert said(lines)[-1][0] == logging.INFO
