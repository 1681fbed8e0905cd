"""The transactions' writer on PostgreSQL begins each transaction with its first statement and
runs a pass's hot statements on asyncpg itself (`core.database._PostgresWriter`,
`model.prepared`): no statement runs outside the transaction, a pass's lock of its runs carries
the BEGIN and still sees every cancel, and the driver's errors are SQLAlchemy's, a connection
dropped mid-pass included (transient, invalidated, never lent again). Where the behaviour is
the backends' both, both are tested."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from sqlalchemy import Integer, cast, literal, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.util import await_

from apps.core.database import Transactions, is_transient
from apps.core.settings import Settings
from apps.orchestrator.engine import statements
from apps.orchestrator.model.locks import lock_runs_for_recording
from apps.orchestrator.model.models import Run, utcnow
from apps.orchestrator.model.prepared import connection_of, execute_many, fetch
from apps.orchestrator.model.transitions import INSERT_EVENTS
from tests.conftest import postgres_dsn
from tests.orchestrator.test_worker import _submit

# The writer of PostgreSQL alone: on SQLite there is nothing of it to test, not a skip.
postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

ONE_NODE = {"type": "dag", "nodes": [{"key": "only", "role": "writer", "prompt": "Write."}]}


@pytest.fixture
async def admin(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own to the app's PostgreSQL database."""
    connection = await asyncpg.connect(postgres_dsn(settings.database_url))
    try:
        yield connection
    finally:
        await connection.close()


def _in_transaction(session: Session) -> bool:
    driver = connection_of(session).connection.driver_connection
    assert driver is not None
    return bool(driver.is_in_transaction())


def _first_through_sqlalchemy(session: Session) -> bool:
    session.execute(text("SELECT 1"))
    return _in_transaction(session)


def _first_on_the_driver(session: Session) -> bool:
    statements.finished_runs(connection_of(session), [uuid.uuid4()])
    return _in_transaction(session)


@postgresql_only
async def test_a_transaction_begins_before_its_first_statement_whichever_runs_it(
    transactions: Transactions, admin: asyncpg.Connection
) -> None:
    assert await transactions.run(_in_transaction) is False
    assert await transactions.run(_first_through_sqlalchemy) is True
    assert await transactions.run(_first_on_the_driver) is True


@postgresql_only
async def test_a_transaction_that_raises_is_rolled_back_and_its_connection_lent_again(
    transactions: Transactions, client: httpx.AsyncClient, admin: asyncpg.Connection
) -> None:
    run_id = uuid.UUID(await _submit(client, ONE_NODE))

    def cancel_then_fail(session: Session) -> None:
        lock_runs_for_recording(session, [run_id])
        session.execute(Run.__table__.update().values(title="renamed").where(Run.id == run_id))
        raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError):
        await transactions.run(cancel_then_fail)

    assert await admin.fetchval("SELECT title FROM runs WHERE id = $1", run_id) != "renamed"
    assert await transactions.run(_first_through_sqlalchemy) is True


async def test_the_lock_of_a_pass_holds_every_run_and_names_those_being_cancelled(
    transactions: Transactions, client: httpx.AsyncClient, settings: Settings
) -> None:
    going_on = uuid.UUID(await _submit(client, ONE_NODE))
    cancelled = uuid.UUID(await _submit(client, ONE_NODE))
    assert (await client.post(f"/runs/{cancelled}/cancel")).status_code == 202

    found = await transactions.run(lock_runs_for_recording, [going_on, cancelled, uuid.uuid4()])

    assert found == {cancelled}
    assert await transactions.run(lock_runs_for_recording, [going_on]) == set()


@postgresql_only
async def test_the_lock_that_begins_a_pass_waits_for_each_run_and_sees_a_cancel_made_meanwhile(
    transactions: Transactions, client: httpx.AsyncClient, admin: asyncpg.Connection
) -> None:
    first = uuid.UUID(await _submit(client, ONE_NODE))
    second = uuid.UUID(await _submit(client, ONE_NODE))
    await admin.execute("BEGIN")
    await admin.execute(
        "UPDATE runs SET cancel_requested_at = now() WHERE id = $1", min(first, second)
    )
    locking = asyncio.create_task(transactions.run(lock_runs_for_recording, [first, second]))
    await asyncio.sleep(0.2)
    assert not locking.done()
    await admin.execute("COMMIT")

    assert await locking == {min(first, second)}


@postgresql_only
async def test_while_a_pass_holds_its_lock_no_other_transaction_takes_any_of_its_runs(
    transactions: Transactions, client: httpx.AsyncClient, admin: asyncpg.Connection
) -> None:
    going_on = uuid.UUID(await _submit(client, ONE_NODE))
    cancelled = uuid.UUID(await _submit(client, ONE_NODE))
    assert (await client.post(f"/runs/{cancelled}/cancel")).status_code == 202
    refused = []

    def hold(session: Session) -> None:
        lock_runs_for_recording(session, [going_on, cancelled])
        for run_id in (going_on, cancelled):
            try:
                await_(
                    admin.execute("SELECT FROM runs WHERE id = $1 FOR NO KEY UPDATE NOWAIT", run_id)
                )
            except asyncpg.LockNotAvailableError:
                refused.append(run_id)

    await transactions.run(hold)

    assert refused == [going_on, cancelled]


@postgresql_only
async def test_a_statement_run_on_the_driver_fails_as_sqlalchemy_raises_it(
    transactions: Transactions, client: httpx.AsyncClient, admin: asyncpg.Connection
) -> None:
    def not_a_number(session: Session) -> None:
        fetch(connection_of(session), select(cast(literal("x"), Integer).label("n")), {})

    def event_of_no_run(session: Session) -> None:
        row = {"run_id": uuid.uuid4(), "node_id": None, "type": "x", "ts": utcnow(), "data": {}}
        execute_many(connection_of(session), INSERT_EVENTS, [row])

    with pytest.raises(DBAPIError) as raised:
        await transactions.run(not_a_number)
    assert getattr(raised.value.orig, "sqlstate", None) == "22P02"
    assert not is_transient(raised.value)
    with pytest.raises(IntegrityError) as refused:
        await transactions.run(event_of_no_run)
    assert not is_transient(refused.value)
    assert await transactions.run(_first_on_the_driver) is True


@postgresql_only
async def test_a_connection_dropped_mid_pass_fails_it_as_transient_and_is_never_lent_again(
    transactions: Transactions, client: httpx.AsyncClient, admin: asyncpg.Connection
) -> None:
    run_id = uuid.UUID(await _submit(client, ONE_NODE))

    def dropped_between_statements(session: Session) -> None:
        connection = connection_of(session)
        statements.finished_runs(connection, [run_id])
        pid = session.scalar(text("SELECT pg_backend_pid()"))
        await_(admin.execute("SELECT pg_terminate_backend($1)", pid))
        statements.finished_runs(connection, [run_id])

    def dropped_before_the_lock(session: Session) -> None:
        driver = connection_of(session).connection.driver_connection
        assert driver is not None
        pid = driver.get_server_pid()
        await_(admin.execute("SELECT pg_terminate_backend($1)", pid))
        lock_runs_for_recording(session, [run_id])

    for work in (dropped_between_statements, dropped_before_the_lock):
        with pytest.raises(DBAPIError) as raised:
            await transactions.run(work)
        assert raised.value.connection_invalidated
        assert is_transient(raised.value)
        assert await transactions.run(lock_runs_for_recording, [run_id]) == set()
        assert await transactions.run(_first_on_the_driver) is True
