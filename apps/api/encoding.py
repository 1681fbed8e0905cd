"""Lists encoded straight from their rows with orjson, without a pydantic object per row.

A route declares its response model (the OpenAPI document and its clients read it) and returns
the bytes built here. Validating a page into the model and encoding it back cost most of a list
request; the rows a list reads are already in the model's shapes (the database checked them on
the way in), so only what the model would change is done here: ids written as UUIDs, timestamps
in the request's zone, node counts with every status, usage totals as the model types them, an
event's document as the JSON text it is stored as (in UTC; decoded only to write its timestamps
in another zone). `tests/api/test_list_encoding.py` holds the encodings equal to the models'.
"""

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi.responses import Response

from apps.api.timezone import request_zone
from apps.core.read_connections import DriverReads
from apps.orchestrator.reading import runs
from apps.orchestrator.reading.pagination import Page
from apps.orchestrator.reading.run_pages import run_page_json, sqlite_run_page_json
from apps.wire.schemas import NodeCounts, RunSummary
from apps.wire.timestamps import document_in_zone

_NODE_STATUSES = tuple(NodeCounts.model_fields)
_TIMESTAMPS = tuple(
    name for name in RunSummary.model_fields if name.endswith("_at")
)  # created_at, updated_at, started_at, finished_at, cancel_requested_at


class JSONBytes(Response):
    """A JSON body encoded beforehand."""

    media_type = "application/json"


def _uuid_text(value: object) -> str:
    # SQLite hands the id back as 32 hex digits, asyncpg as a UUID.
    text = str(value).lower()
    if len(text) == 32:
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    return text


def _node_counts(text: str) -> dict[str, int]:
    counts = orjson.loads(text)
    return {status: counts.get(status, 0) for status in _NODE_STATUSES}


def _usage(text: str) -> dict[str, int | float]:
    usage = orjson.loads(text)
    return {
        "prompt_tokens": int(usage["prompt_tokens"]),
        "completion_tokens": int(usage["completion_tokens"]),
        "total_tokens": int(usage["total_tokens"]),
        "cost": float(usage["cost"]),
    }


def _zone_converter() -> Callable[[datetime | None], datetime | None] | None:
    zone = request_zone()
    if zone is UTC:
        return None

    def convert(value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(zone)

    return convert


def _run_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": _uuid_text(row["id"]),
        "title": row["title"],
        "status": row["status"],
        "task_type": row["task_type"],
        "error": row["error"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "cancel_requested_at": row["cancel_requested_at"],
        "node_counts": _node_counts(row["node_counts"]),
        "usage": _usage(row["usage"]),
    }


def _in_zone(items: Iterable[dict[str, Any]]) -> None:
    convert = _zone_converter()
    if convert is None:
        return
    for item in items:
        for name in _TIMESTAMPS:
            item[name] = convert(item[name])


def run_summaries(page: Page[dict[str, Any]]) -> JSONBytes:
    """A page of run rows (`reading.runs.list_runs`) as `Page[RunSummary]` JSON."""
    items = [_run_summary(row) for row in page.items]
    _in_zone(items)
    body = {"items": items, "next_cursor": page.next_cursor}
    return JSONBytes(orjson.dumps(body, option=orjson.OPT_UTC_Z))


def events_page(page: Page[dict[str, Any]]) -> JSONBytes:
    """A page of event rows (`reading.event_pages.list_events`, each `data` a JSON text) as
    `Page[Event]` JSON."""
    zone = request_zone()
    for item in page.items:
        item["run_id"] = _uuid_text(item["run_id"])
        if item["node_id"] is not None:
            item["node_id"] = _uuid_text(item["node_id"])
        if zone is UTC:
            item["data"] = orjson.Fragment(item["data"])
        else:
            item["ts"] = item["ts"].astimezone(zone)
            # Through the standard library's JSON, which wrote the text: orjson reads an integer
            # beyond 64 bits as a float, and refuses to write one.
            document = document_in_zone(json.loads(item["data"]), zone)
            item["data"] = orjson.Fragment(json.dumps(document))
    body = {"items": page.items, "next_cursor": page.next_cursor}
    return JSONBytes(orjson.dumps(body, option=orjson.OPT_UTC_Z))


async def runs_page(
    reads: DriverReads, where: runs.RunFilter, limit: int, cursor: str | None
) -> JSONBytes:
    """A page of the runs list as `Page[RunSummary]` JSON: written by the database itself
    where it can (in UTC; on SQLite's readers when it has them), else encoded here from the
    rows."""
    in_utc = request_zone() is UTC
    if in_utc and reads.sqlite is not None:
        body = await sqlite_run_page_json(reads.sqlite, reads.engine.dialect, where, limit, cursor)
        if body is not None:
            return JSONBytes(body)
    async with reads.engine.connect() as connection:
        if in_utc and reads.sqlite is None:
            body = await run_page_json(connection, where, limit, cursor)
            if body is not None:
                return JSONBytes(body)
        page = await runs.list_runs(connection, where, limit, cursor)
    return run_summaries(page)
