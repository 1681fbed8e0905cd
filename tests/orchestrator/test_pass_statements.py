"""The statements of a worker's pass as each backend runs them: on SQLite on the driver's cursor
(`model.prepared`), on PostgreSQL with the events inserted by the claim; what they write is what
`record_event` and the Core statements write, and what they cost does not grow with the nodes of
other runs."""

import sqlite3
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from apps.core.database import JSON_SERIALIZER, Transactions, is_transient
from apps.core.settings import Settings
from apps.orchestrator.engine import passes, statements
from apps.orchestrator.model.models import Node
from apps.orchestrator.model.prepared import connection_of, fetch
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_worker import _submit

CHAIN = {
    "type": "dag",
    "nodes": [
        {"key": "first", "role": "writer", "prompt": "Write."},
        {"key": "second", "role": "writer", "prompt": "Go on.", "deps": ["first"]},
    ],
}


def _wide(nodes: int) -> dict[str, Any]:
    root = {"key": "root", "role": "writer", "prompt": "Start."}
    rest = [
        {"key": f"n{index}", "role": "writer", "prompt": "More.", "deps": ["root"]}
        for index in range(nodes - 1)
    ]
    return {"type": "dag", "nodes": [root, *rest]}


def _started_texts(session: Session, run_id: str) -> list[str]:
    """The data of the run's `node.started` events as the database keeps the text."""
    data = "data::text" if session.get_bind().dialect.name == "postgresql" else "data"
    query = text(
        f"SELECT {data} FROM events WHERE run_id = :run AND type = 'node.started' ORDER BY id"
    )
    return list(session.scalars(query, {"run": _stored_id(session, run_id)}))


def _stored_id(session: Session, run_id: str) -> Any:
    value = uuid.UUID(run_id)
    return value if session.get_bind().dialect.name == "postgresql" else value.hex


async def test_a_claim_after_recording_writes_the_started_events_as_record_event_does(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    run_id = await _submit(client, CHAIN)
    worker = Worker(transactions, settings)
    first = await transactions.run(
        passes.run_pass, [], worker=worker.name, slots=1, settings=settings
    )
    outcome = await worker.executor.attempt(first.claimed[0])

    second = await transactions.run(
        passes.run_pass, [outcome], worker=worker.name, slots=1, settings=settings
    )

    assert [work.key for work in second.claimed] == ["second"]
    expected = {"from": "ready", "cause": "claimed", "attempt": 1, "worker": worker.name}
    texts = await transactions.run(_started_texts, run_id)
    assert texts == [JSON_SERIALIZER(expected)] * 2
    events = (await client.get("/events", params={"run_id": run_id})).json()["items"]
    assert [event["type"] for event in events][-4:] == [
        "node.succeeded",
        "artifact.created",
        "node.ready",
        "node.started",
    ]
    ids = [event["id"] for event in events]
    assert ids == sorted(ids)


async def test_promoting_dependents_reads_no_pending_node_of_other_runs(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    if settings.database_url.startswith("postgresql"):
        pytest.skip("counts SQLite's virtual machine steps")
    run_id = await _submit(client, _wide(3))

    def steps(session: Session) -> int:
        connection = connection_of(session)
        root = session.scalar(
            select(Node.id).where(Node.run_id == uuid.UUID(run_id), Node.key == "root")
        )
        assert root is not None
        counted = [0]
        driver: sqlite3.Connection = connection.connection.driver_connection  # type: ignore[assignment]

        def count() -> int:
            counted[0] += 1
            return 0

        driver.set_progress_handler(count, 1)
        try:
            statements.promote(connection, after=[root])
        finally:
            driver.set_progress_handler(None, 1)
        return counted[0]

    alone = await transactions.run(steps)
    for _ in range(2):
        await _submit(client, _wide(400))
    beside_others = await transactions.run(steps)

    assert beside_others < alone * 1.5


async def test_a_driver_error_is_raised_as_sqlalchemy_raises_it(
    transactions: Transactions, settings: Settings
) -> None:
    if settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite's statements run on its driver")

    def malformed(session: Session) -> None:
        fetch(connection_of(session), select(func.json_extract("{", "$").label("value")), {})

    with pytest.raises(DBAPIError) as raised:
        await transactions.run(malformed)
    assert isinstance(raised.value.orig, sqlite3.OperationalError)
    assert not is_transient(raised.value)
