"""A worker stopping while the database is out of reach says why it could not hand its nodes
back: an error without a message (a reset connection, a timeout) still names its kind."""

import logging
from typing import Any

import pytest

from apps.core.database import Transactions
from apps.core.settings import Settings
from apps.orchestrator.worker.loop import Worker


async def test_a_hand_back_that_fails_says_what_failed(
    transactions: Transactions, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    worker = Worker(transactions, settings)

    async def unreachable(*_: Any, **__: Any) -> None:
        raise ConnectionResetError()

    worker._outcomes = [object()]  # type: ignore[list-item]
    worker._passes.run = unreachable  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="apps.orchestrator.worker.loop"):
        await worker._stop()
    assert caplog.messages == [
        "could not hand nodes back, their leases will expire: ConnectionResetError: "
    ]
