"""What routes are handed: a database session or connection, the artifact store, paging."""

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from pydantic import BeforeValidator
from pydantic.config import JsonDict
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from apps.core import read_connections
from apps.core.database import Transactions, unit_of_work
from apps.orchestrator.infra.storage import base as artifact_store
from apps.orchestrator.reading.pagination import DEFAULT_LIMIT, MAX_LIMIT

EVENT_ID = re.compile(r"[0-9]{1,19}")


async def _db_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with unit_of_work(request.app.state.sessions) as session:
        yield session


async def _read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    async with request.app.state.read_engine.connect() as connection:
        yield connection


async def _driver_reads(request: Request) -> read_connections.DriverReads:
    reads: read_connections.DriverReads = request.app.state.driver_reads
    return reads


def _artifact_store(request: Request) -> artifact_store.ArtifactStore:
    store: artifact_store.ArtifactStore = request.app.state.artifact_store
    return store


def _transactions(request: Request) -> Transactions:
    transactions: Transactions = request.app.state.transactions
    return transactions


# scope="function" commits when the handler returns, before the response is sent: a failed commit
# becomes the response instead of following a 200 the client already has.
DbSession = Annotated[AsyncSession, Depends(_db_session, scope="function")]
# Reads need no ORM session and commit nothing: a bare connection, closed when the handler returns,
# saves the session's bookkeeping and a round trip on every list page.
ReadConnection = Annotated[AsyncConnection, Depends(_read_connection, scope="function")]
# A read that calls the driver itself (a runs or events page) takes a connection only as it runs:
# on SQLite one of the readers', lent for its statements; else one of the read engine's.
DriverReads = Annotated[read_connections.DriverReads, Depends(_driver_reads)]
ArtifactStore = Annotated[artifact_store.ArtifactStore, Depends(_artifact_store)]
# Runs one synchronous domain function in a transaction of its own, committed before it returns.
DbTransactions = Annotated[Transactions, Depends(_transactions)]

LIMIT_HELP = f"Items per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})."
CURSOR_HELP = (
    "Where to go on: the `next_cursor` of the previous page, as it was, with the same filters. "
    "Opaque (URL-safe base64); one this list did not issue is a 400. Keyset paging: a page deep "
    "in the list costs what the first does, and rows added meanwhile are neither skipped nor "
    "repeated."
)
# The alphabet of the cursors `pagination.Keyset` writes, for the document: a cursor outside it
# is refused like any other this list did not issue, with a 400.
CURSOR_SCHEMA: JsonDict = {"pattern": r"^[A-Za-z0-9_-]+$"}
MAX_CURSOR_LENGTH = 512
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=LIMIT_HELP)]
Cursor = Annotated[
    str | None,
    Query(description=CURSOR_HELP, max_length=MAX_CURSOR_LENGTH, json_schema_extra=CURSOR_SCHEMA),
]


def _written_as_an_event_id(value: object) -> object:
    # Python's int() also reads "5_0", "+5", " 5" and other scripts' digits; an id is written
    # one way only, so a client never resumes after an event it did not name.
    if isinstance(value, str) and not EVENT_ID.fullmatch(value):
        raise ValueError("an event id is written in the digits 0-9 alone")
    return value


# An event id in a query, read strictly; routes add `Query(...)` with their description.
EventIdQuery = Annotated[int | None, BeforeValidator(_written_as_an_event_id)]
