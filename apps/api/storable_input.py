"""Input the database cannot store faithfully is refused before anything reads it.

JSON admits numbers that no column holds as sent: Python reads `1e400` as infinity and takes the
`NaN` and `Infinity` literals, and SQLite's JSON functions then reject the stored text; integers
past 64 bits come back from them as approximate reals. Text may carry NUL characters, which
PostgreSQL refuses in any text. Any of these, anywhere in a JSON body, a query string or a path,
is a 422 naming where it is: the request changes nothing, and no stored row can stop the worker.
"""

import math
from collections.abc import Iterator
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

INT64 = range(-(2**63), 2**63)
Location = tuple[str | int, ...]


def _problem(location: Location, kind: str, message: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": location, "msg": message, "input": value}


def _nul(location: Location, text: str) -> dict[str, Any]:
    return _problem(location, "string_nul", "Text may not contain NUL characters (\\u0000)", text)


def unstorable_values(value: Any, location: Location) -> Iterator[dict[str, Any]]:
    """Every non-finite number, integer past 64 bits and text with a NUL in `value` (a parsed
    JSON document), in document order, as validation errors located under `location`."""
    # Iterative: a deeply nested document must not exhaust the interpreter's stack.
    pending: list[tuple[Location, Any]] = [(location, value)]
    while pending:
        where, item = pending.pop()
        if isinstance(item, dict):
            for key in item:
                if "\x00" in key:
                    yield _nul(where, key)
            pending.extend(((*where, key), child) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            indexed = list(enumerate(item))
            pending.extend(((*where, index), child) for index, child in reversed(indexed))
        elif isinstance(item, str):
            if "\x00" in item:
                yield _nul(where, item)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, float) and not math.isfinite(item):
            yield _problem(where, "finite_number", "Input should be a finite number", str(item))
        elif isinstance(item, int) and item not in INT64:
            yield _problem(where, "int64", "Input should fit in a 64-bit integer", str(item))


def _text_problems(source: str, items: Iterator[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
    for name, value in items:
        text = str(value)
        if "\x00" in name or "\x00" in text:
            yield _nul((source, name), text)


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
    """A 422 listing every value of the request that could not be stored as it was sent."""
    problems = [
        *_text_problems("path", iter(request.path_params.items())),
        *_text_problems("query", iter(request.query_params.multi_items())),
        *unstorable_values(await _json_body(request), ("body",)),
    ]
    if problems:
        raise RequestValidationError(problems)
