"""SQLite has no index on the nodes' status (migration 0009): the statements of a pass that
filter nodes by status find them from another index, never by reading every node."""

import sqlite3

import pytest
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from apps.core.database import Transactions
from apps.orchestrator.engine import statements
from apps.orchestrator.model.prepared import connection_of


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("successes", [1, 2, 16])
async def test_recording_successes_reads_the_nodes_by_id(
    transactions: Transactions, successes: int
) -> None:
    compiled = statements._succeed(successes).compile(dialect=sqlite.dialect())

    def plan(session: Session) -> list[str]:
        driver: sqlite3.Connection = connection_of(session).connection.driver_connection  # type: ignore[assignment]
        values = [None] * len(compiled.positiontup or ())
        return [row[3] for row in driver.execute(f"EXPLAIN QUERY PLAN {compiled}", values)]

    steps = await transactions.run(plan)
    assert not [step for step in steps if step.startswith("SCAN nodes")], steps
    assert any("SEARCH nodes USING INDEX sqlite_autoindex_nodes" in step for step in steps), steps
