"""Input the database cannot store faithfully is refused before anything reads it.

JSON admits numbers that no column holds as sent: Python reads `1e400` as infinity and takes the
`NaN` and `Infinity` literals, and SQLite's JSON functions then reject the stored text; integers
past 64 bits come back from them as approximate reals. Text may carry NUL characters, which
PostgreSQL refuses in any text. Any of these, anywhere in a JSON body, a query string or a path,
is a 422 naming where it is: the request changes nothing, and no stored row can stop the worker.
"""

import itertools
from collections.abc import Iterator
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from apps.api.errors import MAX_REPORTED_ERRORS
from apps.core.storable import nul_problem, unstorable_values


def _text_problems(source: str, items: Iterator[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
    for name, value in items:
        text = str(value)
        if "\x00" in name or "\x00" in text:
            yield nul_problem((source, name), text)


async def _json_body(request: Request) -> Any:
    """The body FastAPI parsed for the route (read from its cache), or None when it has none."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None:
        return None
    try:
        return await request.json()
    except ValueError:
        # Not JSON: the route's own validation answers for it.
        return None


async def refuse_unstorable_input(request: Request) -> None:
    """A 422 listing the values of the request that could not be stored as they were sent (the
    first `MAX_REPORTED_ERRORS` of them: the walk stops there)."""
    found = itertools.chain(
        _text_problems("path", iter(request.path_params.items())),
        _text_problems("query", iter(request.query_params.multi_items())),
        unstorable_values(await _json_body(request), ("body",)),
    )
    problems = list(itertools.islice(found, MAX_REPORTED_ERRORS))
    if problems:
        raise RequestValidationError(problems)
