"""Runs: the newest-first list with filters, and one run with its node counts and usage."""

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from apps.api.dependencies import NO_NUL, Cursor, Limit, ReadSession
from apps.api.schemas import Page, Run
from apps.api.timezone import as_utc
from apps.orchestrator import runs
from apps.orchestrator.pagination import DEFAULT_LIMIT
from apps.orchestrator.states import RunStatus

router = APIRouter(tags=["runs"])


@router.get("/runs")
async def list_runs(
    session: ReadSession,
    status: Annotated[RunStatus | None, Query(description="Only runs in this status.")] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=NO_NUL,
            description="Only runs whose title contains this, ignoring case.",
        ),
    ] = None,
    created_after: Annotated[
        datetime | None, Query(description="Only runs created at or after this time.")
    ] = None,
    created_before: Annotated[
        datetime | None, Query(description="Only runs created before this time.")
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[Run]:
    """Runs, newest first."""
    where = runs.RunFilter(
        status=status,
        title_contains=q,
        created_after=as_utc(created_after, "created_after") if created_after else None,
        created_before=as_utc(created_before, "created_before") if created_before else None,
    )
    page = await runs.list_runs(session, where, limit, cursor)
    return Page[Run].model_validate({"items": page.items, "next_cursor": page.next_cursor})


@router.get("/runs/{run_id}")
async def get_run(session: ReadSession, run_id: uuid.UUID) -> Run:
    """One run, with its node counts by status and its usage totals."""
    return Run.model_validate(await runs.get_run(session, run_id))
