"""Runs: the newest-first list with filters, and one run with its node counts and usage."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from apps.api import encoding
from apps.api.dependencies import (
    CURSOR_HELP,
    CURSOR_SCHEMA,
    LIMIT_HELP,
    MAX_CURSOR_LENGTH,
    DriverReads,
    ReadConnection,
)
from apps.api.encoding import JSONBytes
from apps.api.responses import errors
from apps.api.routing import ProtectedRoute
from apps.api.timezone import QueryTimestamp, as_utc
from apps.core.text import NO_NUL
from apps.orchestrator.model.states import RunStatus
from apps.orchestrator.reading import runs
from apps.orchestrator.reading.pagination import DEFAULT_LIMIT, MAX_LIMIT
from apps.wire.schemas import Page, Run, RunSummary

router = APIRouter(tags=["runs"], route_class=ProtectedRoute)


class RunQuery(BaseModel):
    """Filters and paging of the runs list, validated together in one pass."""

    status: RunStatus | None = Field(default=None, description="Only runs in this status.")
    q: str | None = Field(
        default=None,
        max_length=200,
        pattern=NO_NUL,
        description="Only runs whose title contains this, ignoring case.",
    )
    created_after: QueryTimestamp | None = Field(
        default=None, description="Only runs created at or after this time."
    )
    created_before: QueryTimestamp | None = Field(
        default=None, description="Only runs created before this time."
    )
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=LIMIT_HELP)
    cursor: str | None = Field(
        default=None,
        max_length=MAX_CURSOR_LENGTH,
        json_schema_extra=CURSOR_SCHEMA,
        description=CURSOR_HELP,
    )


# The page is encoded from its rows (apps/api/encoding.py); the model still documents it.
@router.get("/runs", response_model=Page[RunSummary])
async def list_runs(reads: DriverReads, query: Annotated[RunQuery, Query()]) -> JSONBytes:
    """Runs, newest first, as summaries: each without its task spec, which
    `GET /runs/{run_id}` has."""
    where = runs.RunFilter(
        status=query.status,
        title_contains=query.q,
        created_after=as_utc(query.created_after, "created_after") if query.created_after else None,
        created_before=as_utc(query.created_before, "created_before")
        if query.created_before
        else None,
    )
    return await encoding.runs_page(reads, where, query.limit, query.cursor)


@router.get("/runs/{run_id}", responses=errors(404))
async def get_run(connection: ReadConnection, run_id: uuid.UUID) -> Run:
    """One run, with its task spec, its node counts by status and its usage totals."""
    return Run.model_validate(await runs.get_run(connection, run_id))
