"""Reading runs: the newest-first list with its filters, and one run with its node counts.

The list is a hot path: it selects only the columns it returns and counts each run's nodes in the
same statement, so one page is one round trip to the database.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ColumnElement, Select, func, select, tuple_
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from apps.core.errors import NotFound
from apps.orchestrator.models import Node, Run
from apps.orchestrator.pagination import (
    Page,
    decode_cursor,
    encode_cursor,
    paginate,
    parse_timestamp,
    parse_uuid,
)
from apps.orchestrator.states import RunStatus

RUN_COLUMNS = (
    Run.id,
    Run.title,
    Run.status,
    Run.task_spec,
    Run.error,
    Run.created_by,
    Run.created_at,
    Run.updated_at,
    Run.started_at,
    Run.finished_at,
    Run.cancel_requested_at,
    Run.prompt_tokens,
    Run.completion_tokens,
    Run.total_tokens,
    Run.cost,
)


@dataclass(frozen=True, slots=True)
class RunFilter:
    status: RunStatus | None = None
    title_contains: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _node_counts(dialect_name: str) -> ColumnElement[Any]:
    """Each run's node counts by status as one JSON object, correlated to the outer run row."""
    per_status = (
        select(Node.status, func.count().label("n"))
        .where(Node.run_id == Run.id)
        .group_by(Node.status)
        .correlate(Run)
        .subquery()
    )
    aggregate = func.json_group_object if dialect_name == "sqlite" else func.json_object_agg
    return (
        select(aggregate(per_status.c.status, per_status.c.n, type_=JSON))
        .scalar_subquery()
        .label("node_counts")
    )


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name


def _select_runs(session: AsyncSession) -> Select[Any]:
    return select(*RUN_COLUMNS, _node_counts(_dialect(session)))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _title_contains(text: str, dialect_name: str) -> ColumnElement[bool]:
    if dialect_name == "sqlite":
        pattern = f"%{_escape_like(text.casefold())}%"
        return func.casefold(Run.title).like(pattern, escape="\\")
    return Run.title.ilike(f"%{_escape_like(text)}%", escape="\\")


def _filtered(statement: Select[Any], where: RunFilter, dialect_name: str) -> Select[Any]:
    if where.status is not None:
        statement = statement.where(Run.status == where.status)
    if where.title_contains:
        statement = statement.where(_title_contains(where.title_contains, dialect_name))
    if where.created_after is not None:
        statement = statement.where(Run.created_at >= where.created_after)
    if where.created_before is not None:
        statement = statement.where(Run.created_at < where.created_before)
    return statement


def _run_cursor(row: RowMapping) -> str:
    return encode_cursor("runs", row["created_at"].isoformat(), row["id"].hex)


async def list_runs(
    session: AsyncSession, where: RunFilter, limit: int, cursor: str | None
) -> Page[RowMapping]:
    """Runs matching `where`, newest first, `limit` at a time after `cursor`."""
    statement = _filtered(_select_runs(session), where, _dialect(session))
    if cursor is not None:
        created_at, run_id = decode_cursor(cursor, "runs", parse_timestamp, parse_uuid)
        # The row-value form lets SQLite walk the index; the expanded OR form scans it.
        statement = statement.where(tuple_(Run.created_at, Run.id) < (created_at, run_id))
    statement = statement.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit + 1)
    rows = (await session.execute(statement)).mappings().all()
    return paginate(rows, limit, _run_cursor)


async def get_run(session: AsyncSession, run_id: uuid.UUID) -> RowMapping:
    """One run with its node counts, or `NotFound`."""
    row = (await session.execute(_select_runs(session).where(Run.id == run_id))).mappings().first()
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return row


async def require_run(session: AsyncSession, run_id: uuid.UUID) -> None:
    """Raise `NotFound` unless the run exists."""
    if await session.scalar(select(Run.id).where(Run.id == run_id)) is None:
        raise NotFound(f"run {run_id} not found")
