"""The runs list, one run with its DAG and timeline, and a node's panel."""

import uuid
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from apps.console import artifacts as console_artifacts
from apps.console.dag import lay_out
from apps.console.views import budget_of, run_view
from apps.console.web import (
    BLANK_IS_NONE,
    PAGE_METHODS,
    Cursor,
    Viewer,
    console_router,
    page,
)
from apps.orchestrator.model.models import Event
from apps.orchestrator.model.states import RunStatus
from apps.orchestrator.reading import events, nodes, runs
from apps.orchestrator.reading.events import EVENT_COLUMNS
from apps.orchestrator.reading.pagination import DEFAULT_LIMIT, MAX_LIMIT, as_dicts

router = console_router()

# The timeline shows a run's latest events; the live stream carries on after the last of them.
TIMELINE_EVENTS = 200


def _day(value: date | None, *, end: bool = False) -> datetime | None:
    if value is None:
        return None
    return datetime.combine(value, time.max if end else time.min, tzinfo=UTC)


@router.api_route("/runs", methods=PAGE_METHODS)
async def runs_page(
    request: Request,
    owner: Viewer,
    status: Annotated[RunStatus | None, BLANK_IS_NONE, Query()] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    created_after: Annotated[date | None, BLANK_IS_NONE, Query()] = None,
    created_before: Annotated[date | None, BLANK_IS_NONE, Query()] = None,
    cursor: Cursor = None,
) -> Response:
    """Runs, newest first, with filters and keyset paging; new runs and statuses arrive live."""
    where = runs.RunFilter(
        status=status,
        title_contains=q or None,
        created_after=_day(created_after),
        created_before=_day(created_before, end=True),
    )
    async with request.app.state.engine.connect() as connection:
        latest = await events.latest_event_id(connection)
        found = await runs.list_runs(connection, where, DEFAULT_LIMIT, cursor)
    filters = {
        "status": status.value if status else "",
        "q": q or "",
        "created_after": created_after.isoformat() if created_after else "",
        "created_before": created_before.isoformat() if created_before else "",
    }
    return page(
        request,
        "runs.html",
        owner,
        runs=[run_view(row) for row in found.items],
        next_cursor=found.next_cursor,
        filters=filters,
        statuses=[status.value for status in RunStatus],
        older={name: value for name, value in filters.items() if value}
        | {"cursor": found.next_cursor},
        live=cursor is None,
        after=latest,
    )


async def _all_nodes(connection: AsyncConnection, run_id: uuid.UUID) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        batch = await nodes.list_nodes(connection, run_id, MAX_LIMIT, cursor)
        found.extend(batch.items)
        cursor = batch.next_cursor
        if cursor is None:
            return found


async def _latest_events(connection: AsyncConnection, run_id: uuid.UUID) -> list[dict[str, Any]]:
    statement = (
        select(*EVENT_COLUMNS)
        .where(Event.run_id == run_id)
        .order_by(Event.id.desc())
        .limit(TIMELINE_EVENTS)
    )
    return list(reversed(as_dicts(await connection.execute(statement))))


@router.api_route("/runs/{run_id}", methods=PAGE_METHODS)
async def run_page(
    request: Request,
    owner: Viewer,
    run_id: uuid.UUID,
    node: Annotated[uuid.UUID | None, Query()] = None,
) -> Response:
    """One run: its figures, its DAG, the chosen node's panel and the timeline, live."""
    async with request.app.state.engine.connect() as connection:
        # Events first: the stream resumes after the last of them, so the run and its nodes,
        # read after, are at least as new, and whatever changes later arrives live. Read the
        # other way round, a change committed in between showed in the timeline but never in
        # the run's status.
        timeline = await _latest_events(connection, run_id)
        run = run_view(await runs.get_run(connection, run_id))
        plan = await _all_nodes(connection, run_id)
        panel = (
            await console_artifacts.node_panel(connection, request.app.state.artifact_store, node)
            if node is not None and any(item["id"] == node for item in plan)
            else None
        )
    return page(
        request,
        "run.html",
        owner,
        run=run,
        budget=budget_of(run),
        layout=lay_out(plan),
        timeline=timeline,
        after=timeline[-1]["id"] if timeline else 0,
        panel=panel,
    )


@router.api_route("/runs/{run_id}/nodes/{node_id}/panel", methods=PAGE_METHODS)
async def node_panel(
    request: Request, owner: Viewer, run_id: uuid.UUID, node_id: uuid.UUID
) -> Response:
    """A node's panel alone, for the run page to show without a reload."""
    async with request.app.state.engine.connect() as connection:
        panel = await console_artifacts.node_panel(
            connection, request.app.state.artifact_store, node_id, run_id=run_id
        )
    return page(request, "node_panel.html", owner, panel=panel)
