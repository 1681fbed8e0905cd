"""The LISTEN connection of the event streams through an outage of PostgreSQL: it tries again
every `retry_seconds` and says so in a few lines, not one a retry.

The outage is a proxy of the test's own that resets every connection and refuses new ones, as a
restarting server or a failover does."""

import asyncio
import contextlib
import logging
import time

import pytest

from apps.orchestrator.infra import event_wakes
from apps.orchestrator.infra.event_wakes import NotifyWake
from tests.conftest import postgres_dsn
from tests.proxies import resetting_proxy_to

WAIT = 5.0
OUTAGE_SECONDS = 1.25
STILL_FAILING_LOG_SECONDS = 0.5


async def test_an_outage_is_a_few_warnings_and_a_line_when_it_listens_again(
    postgres_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=event_wakes.__name__)
    listening = asyncio.Event()
    with resetting_proxy_to(postgres_database) as (proxy, through_proxy):
        wake = NotifyWake(
            postgres_dsn(through_proxy),
            retry_seconds=0.02,
            # The reset reaches an idle connection when it next sends: its check.
            check_seconds=0.1,
            still_failing_log_seconds=STILL_FAILING_LOG_SECONDS,
        )
        watching = asyncio.create_task(wake.watch(listening.set))
        try:
            await asyncio.wait_for(listening.wait(), WAIT)
            listening.clear()
            cut_at = time.monotonic()
            proxy.cut()
            await asyncio.sleep(OUTAGE_SECONDS)
            proxy.mend()
            await asyncio.wait_for(listening.wait(), WAIT)
            lasted = time.monotonic() - cut_at
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

    lines = [r for r in caplog.records if r.name == event_wakes.__name__]
    warnings = [r.getMessage() for r in lines if r.levelno == logging.WARNING]
    # A retry every 0.02 s for 1.25 s: the first, then one every half second.
    # (The outage lasts longer than the sleep on a loaded machine: bounded by what it lasted.)
    assert 2 <= len(warnings) <= 1 + lasted // STILL_FAILING_LOG_SECONDS, (lasted, warnings)
    assert warnings[0].startswith("event notifications listener failed, listening again in 0.02s")
    assert all(
        message.startswith("event notifications listener still failing (")
        for message in warnings[1:]
    )
    (recovered,) = [r.getMessage() for r in lines if r.levelno == logging.INFO]
    assert recovered.startswith("event notifications listener is running again, after ")
    failures = int(recovered.split("after ")[1].split(" ")[0])
    assert failures > len(warnings)
    assert len([r for r in lines if r.levelno == logging.DEBUG]) == failures - len(warnings)
