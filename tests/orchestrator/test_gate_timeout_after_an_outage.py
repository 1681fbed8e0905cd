"""A gate that times out while the database is out of reach is decided within seconds of the
database answering again.

The worker's gate timer fails for as long as the outage lasts, and its supervisor restarts it
after 0.5, 1, 2, 4 s and then every 5 s (`MAX_DELAY_SECONDS`): once the database is back, the
timer tries again within 5 s. A bound of 30 s put its tries 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s
into the outage, so after one of `OUTAGE_SECONDS` the timeout came some 6 s late, and after one of
20 s, 11.5 s late.

The outage is a proxy of the test's own between the worker and PostgreSQL that resets every
connection and refuses new ones (`tests.proxies.ResettingProxy`); the API, which submits the run
and reads the gate, reaches the database directly. PostgreSQL only: SQLite's outage is a file
another process holds locked, and a transaction waits up to 5 s for it (`SQLITE_BUSY_TIMEOUT_MS`)
before it fails, so the timer's tries are 5 s apart at least and its supervisor's delays only
made it late after outages of the better part of a minute.
"""

import asyncio
from pathlib import Path
from typing import Any

import httpx

from apps.core.database import open_database
from apps.orchestrator.worker.loop import Worker
from tests.conftest import served, settings_for
from tests.orchestrator.test_run_control import _wait_for, _working
from tests.orchestrator.test_worker import _submit
from tests.proxies import resetting_proxy_to

# Three seconds: the gate times out early in the outage.
GATE = {"timeout_minutes": 0.05, "on_timeout": "approve"}
GATED = {"key": "draft", "role": "writer", "prompt": "Draft it.", "gate": GATE}
OUTAGE_SECONDS = 10
# The timer's next try once the database is back (2.5 s after this outage), its pause between
# two looks (0.5 s), the decision; well short of the 5.5 s of a bound of 30 s.
DECIDED_WITHIN_SECONDS = 4.5


async def _gate_of(client: httpx.AsyncClient, run_id: str) -> dict[str, Any] | None:
    """The run's one gate, once its node has opened it."""
    gates = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    return gates[0] if gates else None


async def test_a_gate_that_timed_out_during_an_outage_is_decided_soon_after_it(
    postgres_database: str, tmp_path: Path
) -> None:
    settings = settings_for(postgres_database, tmp_path)
    loop = asyncio.get_running_loop()
    with resetting_proxy_to(postgres_database) as (proxy, through_proxy):
        async with (
            served(settings) as client,
            open_database(settings, through_proxy) as cut_off,
            _working(Worker(cut_off.transactions, settings)),
        ):
            run_id = await _submit(client, {"type": "dag", "nodes": [GATED]})

            async def waiting() -> bool:
                gate = await _gate_of(client, run_id)
                return gate is not None and gate["status"] == "pending"

            async def decided() -> dict[str, Any] | None:
                gate = await _gate_of(client, run_id)
                return gate if gate is not None and gate["status"] != "pending" else None

            await _wait_for(waiting)
            proxy.cut()
            await asyncio.sleep(OUTAGE_SECONDS)
            proxy.mend()
            mended = loop.time()
            gate = await _wait_for(decided, seconds=40)
            late = loop.time() - mended

    assert (gate["status"], gate["decided_by"], gate["automatic"]) == ("approved", "timeout", True)
    assert late < DECIDED_WITHIN_SECONDS, f"decided {late:.1f}s after the database came back"
