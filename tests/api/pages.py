"""Reading the list routes in tests: one page, every page, forged cursors and error details.

The helpers take their own arguments positionally, so that every keyword argument but
`headers` (request headers) is a query parameter, even one named `status` or `path`.
"""

import base64
import json
from typing import Any

import httpx

from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.model.models import Run
from tests.factories import create_event, create_run


async def get_json(
    client: httpx.AsyncClient, path: str, /, *, headers: dict[str, str] | None = None, **params: Any
) -> Any:
    """The JSON body of GET `path`, asserting a 200."""
    response = await client.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def single_page(
    client: httpx.AsyncClient, path: str, /, *, headers: dict[str, str] | None = None, **params: Any
) -> list[dict[str, Any]]:
    """The items of a list that fits on one page, asserting a 200 and no next_cursor."""
    page = await get_json(client, path, headers=headers, **params)
    assert page["next_cursor"] is None
    return page["items"]


async def every_page(
    client: httpx.AsyncClient, path: str, limit: int, /, **params: Any
) -> list[dict[str, Any]]:
    """The items of every page of `limit` items, in order, following next_cursor to the end.

    Asserts each page is a 200 of at most `limit` items and every page before the last is full.
    """
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        page = await get_json(client, path, **query)
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert len(page["items"]) == limit


def forge_cursor(*parts: Any) -> str:
    """A cursor of `parts` as the API writes one: a JSON list, base64url without padding."""
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


async def events_cursor(client: httpx.AsyncClient, sessions: SessionFactory) -> tuple[Run, str]:
    """A new run with two events, and a real next_cursor of GET /events to offer another list."""
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        await create_event(session, run)
        await create_event(session, run)
    cursor = (await get_json(client, "/events", limit=1))["next_cursor"]
    assert cursor is not None
    return run, cursor


async def error_detail(
    client: httpx.AsyncClient,
    path: str,
    status_code: int,
    /,
    *,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> str:
    """The detail of GET `path`, asserting the answer is `status_code` and the detail a string."""
    response = await client.get(path, params=params, headers=headers)
    assert response.status_code == status_code, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str), detail
    return detail
